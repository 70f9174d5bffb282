/**
 * Fault: the Redis server is SIGKILLed and restarted while events are being
 * published and consumed. With AOF `appendfsync always`, no acknowledged
 * publish may be lost; without persistence, the group is recreated. Either
 * way consumption must resume by itself within 3 s of the restart. Also:
 * every connection killed (CLIENT KILL), and a server that stops answering
 * (SIGSTOP) while a read is blocked.
 */
import { describe, expect, it } from 'vitest'
import type { Subscription as RxSubscription } from 'rxjs'
import { handleEach } from '../../operators/index.js'
import { createBlockingClient, createRedisClient } from '../../src/backend/redis/connection.js'
import { RedisBackend } from '../../src/backend/redis/redis-backend.js'
import { createEventManager, encodeEvent, loadConfig, newEvent } from '../../src/index.js'
import { startRedisServer } from '../support/redis-server.js'
import { newRedis, randomName } from '../support/redis.js'
import { sleep, waitFor } from '../support/events.js'
import { pendingByConsumer, streamKey } from './helpers.js'

const RESUME_BOUND_MS = 3_000

type Fault = 'restart-aof' | 'restart-volatile' | 'client-kill'

async function run(fault: Fault): Promise<void> {
  const persistent = fault !== 'restart-volatile'
  const server = await startRedisServer(fault === 'restart-aof' ? { aof: true, appendfsync: 'always' } : {})
  const topic = randomName('restart')
  const group = randomName('g')
  const events = createEventManager({ redisUrl: server.url, env: {} })
  let sub: RxSubscription | undefined
  try {
    const handled = new Map<number, number>() // payload -> first handled at
    sub = events
      .topic(topic)
      .consume({ group, blockMs: 1_000, claimMinIdleTime: 1_000, claimInterval: 500 })
      .pipe(
        handleEach((msg) => {
          const n = msg.event.payload as number
          if (!handled.has(n)) handled.set(n, Date.now())
        }, { concurrency: 4 }),
      )
      .subscribe()

    const acked = new Map<number, number>() // payload -> acknowledged at
    const inFlight = new Set<Promise<void>>()
    let next = 0
    const publishing = { on: true }
    const publisher = (async () => {
      while (publishing.on) {
        const n = next++
        const p = events.publish(topic, newEvent('n', n)).then(
          () => void acked.set(n, Date.now()),
          () => undefined, // not acknowledged: it may or may not be stored
        )
        inFlight.add(p)
        void p.finally(() => inFlight.delete(p))
        await sleep(5)
      }
    })()

    await waitFor(() => handled.size >= 50, 10_000, 'consumption before the crash')
    const killedAt = Date.now()
    if (fault === 'client-kill') {
      const admin = newRedis(server.url)
      await admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes')
      await admin.quit()
    } else {
      await server.kill()
      await sleep(1_000)
      await server.restart()
    }
    const restartedAt = Date.now()
    await waitFor(() => [...handled.values()].some((t) => t >= restartedAt), 10_000, 'consumption after the restart')
    const resumedAfter = Math.min(...[...handled.values()].filter((t) => t >= restartedAt)) - restartedAt
    await sleep(1_000)
    publishing.on = false
    await publisher
    await Promise.all([...inFlight])

    // What must be handled: every acknowledged publish (AOF always, or no restart), or every one acknowledged after the restart.
    const required = [...acked.entries()].filter(([, at]) => persistent || at >= restartedAt).map(([n]) => n)
    await waitFor(() => required.every((n) => handled.has(n)), 15_000, 'every required event handled')
    const redis = newRedis(server.url)
    try {
      const stored = new Set((await redis.xrange(streamKey(topic), '-', '+')).map(([, f]) => Number(f[f.indexOf('payload') + 1])))
      for (const n of required) expect(stored.has(n)).toBe(true)
      await waitFor(async () => (await pendingByConsumer(redis, streamKey(topic), group)).total === 0, 10_000, 'nothing pending')
      expect(await events.backend.topics()).toContain(topic) // registered again after a restart that lost everything
    } finally {
      await redis.quit()
    }
    console.log(
      `[${fault}] down ${restartedAt - killedAt} ms; consumption resumed ${resumedAfter} ms after the restart; ` +
        `acknowledged ${acked.size}/${next}, required ${required.length}, handled ${handled.size}`,
    )
    expect(resumedAfter).toBeLessThanOrEqual(RESUME_BOUND_MS)
  } finally {
    sub?.unsubscribe()
    await events.close()
    await server.stop()
  }
}

describe('Redis restart', () => {
  it('with AOF appendfsync always: no acknowledged publish is lost; consumption resumes within 3 s', async () => {
    await run('restart-aof')
  })

  it('without persistence: the group is recreated and consumption resumes within 3 s', async () => {
    await run('restart-volatile')
  })
})

describe('lost connections', () => {
  it('CLIENT KILL of every connection: consumption resumes by itself, no publish is lost', async () => {
    await run('client-kill')
  })

  it('a blocked read on a server that stops answering fails within BLOCK + the slack; the reader then works again', async () => {
    const server = await startRedisServer()
    const config = loadConfig({ redisUrl: server.url }, {})
    const backend = new RedisBackend({
      client: createRedisClient(config),
      createBlockingClient: () => createBlockingClient(config),
      keyPrefix: 'event:',
      ownsClient: true,
      readTimeoutSlackMs: 300,
    })
    try {
      const topic = randomName('paused')
      const group = randomName('g')
      await backend.ensureGroup(topic, group, 'beginning')
      const reader = backend.createReader()
      expect(await reader.read(topic, group, 'c', { count: 1, blockMs: 50, from: 'new' })).toEqual([])
      server.pause()
      const started = Date.now()
      await expect(reader.read(topic, group, 'c', { count: 1, blockMs: 200, from: 'new' })).rejects.toThrow(/did not answer within 500 ms/)
      const elapsed = Date.now() - started
      server.resume()
      expect(elapsed).toBeLessThan(1_500)
      await backend.append(topic, [encodeEvent(newEvent('after', 1), 1_000)])
      // The abandoned read may still be served once the server resumes, delivering the entry to this
      // consumer's pending list: the engine re-reads its own pending entries after any failure, so do the same.
      const fresh = await reader.read(topic, group, 'c', { count: 1, blockMs: 1_000, from: 'new' })
      const entries = fresh.length > 0 ? fresh : await reader.read(topic, group, 'c', { count: 10, blockMs: 0, from: 'pending' })
      expect(entries.map((e) => e.fields ?? []).flat()).toContain('after')
      await reader.close()
    } finally {
      server.resume()
      await backend.close()
      await server.stop()
    }
  })
})
