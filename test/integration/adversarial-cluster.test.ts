/**
 * Adversarial: coalesced retry-safe publishes on a 3-master Redis Cluster.
 * A coalesced appendOnce call has a key count that varies with its size
 * (2 … 513), and ioredis files an autopipelined script call under the slot
 * of its first argument; mixed in one tick with publishes to topics on every
 * node, batches of both layouts, stats and reads, no caller may see a
 * Cluster error, and each event must be appended once, in call order per
 * topic. A consumer with read-ahead then reads every topic back.
 */
import { Cluster, Redis } from 'ioredis'
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

async function streamEventIds(topic: string, client: Cluster = direct): Promise<string[]> {
  const entries = await client.xrange(`event:stream:{${topic}}`, '-', '+')
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

describe('coalesced publish with WAIT on a Cluster with replicas', () => {
  let replicated: RedisCluster
  let inspect: Cluster

  beforeAll(async () => {
    replicated = await startRedisCluster({ masters: 3, replicas: 1 })
    inspect = new Cluster(replicated.nodes.map((n) => ({ host: n.host, port: n.port })))
    for (const server of replicated.servers) {
      const node = new Redis(server.port, server.host)
      try {
        for (let i = 0; ; i++) {
          const info = await node.info('replication')
          if (info.includes('role:master') ? /connected_slaves:1/.test(info) : info.includes('master_link_status:up')) break
          if (i > 300) throw new Error(`node ${server.port} did not finish replication setup`)
          await new Promise((r) => setTimeout(r, 50))
        }
      } finally {
        node.disconnect()
      }
    }
  }, 90_000)

  afterAll(async () => {
    inspect.disconnect()
    await replicated.stop()
  })

  async function waits(): Promise<number> {
    let n = 0
    for (const server of replicated.servers) {
      const node = new Redis(server.port, server.host)
      try {
        n += Number(/cmdstat_wait:calls=(\d+)/.exec(await node.info('commandstats'))?.[1] ?? 0)
      } finally {
        node.disconnect()
      }
    }
    return n
  }

  it('300 concurrent publishes to 6 topics with EVENT_PUBLISH_WAIT_REPLICAS=1: every caller resolves, one WAIT per coalesced call, each event once in call order', async () => {
    const events = createEventManager({
      redisHosts: replicated.nodes.map((n) => `${n.host}:${n.port}`),
      env: {},
      delayedQueueEnabled: false,
      publishWaitReplicas: 1,
      publishWaitTimeout: 5_000,
      commandTimeout: 20_000,
    })
    const topics = Array.from({ length: 6 }, (_, i) => randomName(`adv-clw-${i}`))
    try {
      for (const t of topics) await events.publish(t, newEvent('warm.up', 0))
      const before = await waits()
      const published = new Map<string, Event[]>(topics.map((t) => [t, []]))
      const calls = Array.from({ length: 300 }, (_, i) => {
        const topic = topics[i % 6] ?? ''
        const e = newEvent('n', i)
        published.get(topic)?.push(e)
        return events.publish(topic, e)
      })
      const ids = await Promise.all(calls)
      expect(new Set(ids.map((id, i) => `${i % 6}/${id}`)).size).toBe(300)
      const used = (await waits()) - before
      expect(used).toBeGreaterThanOrEqual(6)
      expect(used).toBeLessThanOrEqual(12) // one per topic's coalesced call (a retry after a redirection may add one)
      for (const topic of topics) expect((await streamEventIds(topic, inspect)).slice(1)).toEqual((published.get(topic) ?? []).map((e) => e.id))
    } finally {
      await events.close()
    }
  }, 60_000)
})
