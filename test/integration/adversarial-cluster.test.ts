/**
 * Adversarial: coalesced retry-safe publishes on a 3-master Redis Cluster.
 * A coalesced appendOnce call has a key count that varies with its size
 * (2 … 513), and ioredis files an autopipelined script call under the slot
 * of its first argument; mixed in one tick with publishes to topics on every
 * node, batches of both layouts, stats and reads, no caller may see a
 * Cluster error, and each event must be appended once, in call order per
 * topic. A consumer with read-ahead then reads every topic back.
 */
import { Cluster } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { handleEach } from '../../operators/index.js'
import { createEventManager, newEvent, type Event, type EventManager } from '../../src/index.js'
import { startRedisCluster, type RedisCluster } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { waitFor } from '../support/events.js'

let cluster: RedisCluster
let direct: Cluster

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3 })
  direct = new Cluster(cluster.nodes.map((n) => ({ host: n.host, port: n.port })))
}, 60_000)

afterAll(async () => {
  await direct.quit()
  await cluster.stop()
})

async function streamEventIds(topic: string): Promise<string[]> {
  const entries = await direct.xrange(`event:stream:{${topic}}`, '-', '+')
  return entries.map(([, fields]) => {
    const at = fields.indexOf('id')
    if (at >= 0 && at % 2 === 0) return fields[at + 1] ?? ''
    return String((JSON.parse(fields[fields.indexOf('meta') + 1] ?? '[]') as unknown[])[0])
  })
}

describe.each(['fields', 'compact'] as const)('coalesced publish on a Cluster (%s)', (wireFormat) => {
  it('uneven coalesced calls to 30 topics, mixed with batches, stats and XLENs in the same ticks: no Cluster error, each event once, call order per topic, read back in order', async () => {
    const hosts = cluster.nodes.map((n) => `${n.host}:${n.port}`)
    const events: EventManager = createEventManager({ redisHosts: hosts, env: {}, wireFormat, delayedQueueEnabled: false, commandTimeout: 20_000 })
    const topics = Array.from({ length: 30 }, (_, i) => randomName(`adv-cl-${i}`))
    try {
      const published = new Map<string, Event[]>(topics.map((t) => [t, []]))
      const calls: Promise<unknown>[] = []
      for (let tick = 0; tick < 10; tick++) {
        for (let i = 0; i < 300; i++) {
          // topic t gets t+1 … calls per tick: key counts from 2 to ~40 per coalesced call
          const topic = topics[Math.floor(Math.sqrt(i * 3)) % 30] as string
          if (i % 37 === 5) {
            const batch = Array.from({ length: i % 2 === 0 ? 3 : 20 }, (_, j) => newEvent('b', { tick, i, j }))
            published.get(topic)?.push(...batch)
            calls.push(events.publishBatch(topic, batch))
          } else {
            const e = newEvent('n', { tick, i })
            published.get(topic)?.push(e)
            calls.push(events.publish(topic, e))
          }
          if (i % 50 === 0) calls.push(direct.xlen(`event:stream:{${topics[(i + tick) % 30] as string}}`))
        }
        calls.push(events.stats(topics[tick] ?? ""))
        await new Promise((r) => setImmediate(r))
      }
      const results = await Promise.allSettled(calls)
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
      expect(failed.map((r) => (r.reason as Error).message.slice(0, 120))).toEqual([])
      for (const topic of topics) expect(await streamEventIds(topic)).toEqual((published.get(topic) ?? []).map((e) => e.id))

      const group = randomName('g')
      const read = new Map<string, string[]>()
      const subs = topics.map((topic) =>
        events
          .topic(topic)
          .consume({ group, startFrom: 'beginning', batchSize: 10, blockMs: 200 })
          .pipe(handleEach((m) => void read.set(topic, [...(read.get(topic) ?? []), m.event.id])))
          .subscribe(),
      )
      await waitFor(() => topics.every((t) => (read.get(t)?.length ?? 0) === (published.get(t)?.length ?? 0)), 30_000, 'every topic read back')
      for (const s of subs) s.unsubscribe()
      for (const topic of topics) expect(read.get(topic)).toEqual((published.get(topic) ?? []).map((e) => e.id))
    } finally {
      await events.close()
    }
  }, 90_000)
})
