/**
 * Fault: handlers that run far longer than claimMinIdleTime while other
 * consumers of the group keep claiming. Leases (batched idle-time renewal)
 * must keep every message with the consumer handling it: no duplicates.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Subscription as RxSubscription } from 'rxjs'
import { handleEach } from '../../operators/index.js'
import { createEventManager, newEvent } from '../../src/index.js'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { newRedis, randomName } from '../support/redis.js'
import { sleep, waitFor } from '../support/events.js'
import { pendingByConsumer, streamKey } from './helpers.js'

const CLAIM_MIN_IDLE = 500

let server: RedisServer

beforeAll(async () => {
  server = await startRedisServer()
})

afterAll(async () => {
  await server.stop()
})

describe('long handlers', () => {
  it('20 of 500 events take 4 × claimMinIdleTime: none is handled twice', async () => {
    const topic = randomName('long')
    const group = randomName('g')
    const redis = newRedis(server.url)
    const managers = [0, 1, 2].map(() => createEventManager({ redisUrl: server.url, env: {} }))
    const subs: RxSubscription[] = []
    try {
      const slow = new Set<number>()
      while (slow.size < 20) slow.add(Math.floor(Math.random() * 500))
      await managers[0]!.publishBatch(topic, Array.from({ length: 500 }, (_, i) => newEvent(slow.has(i) ? 'slow' : 'fast', i)))
      const handled: { i: number; consumer: string; delivery: number }[] = []
      managers.forEach((events, c) => {
        subs.push(
          events
            .topic(topic)
            .consume({ group, consumer: `c${c}`, claimMinIdleTime: CLAIM_MIN_IDLE, claimInterval: 100, consumerTimeout: 30_000, batchSize: 10, maxPendingMessages: 50 })
            .pipe(
              handleEach(
                async (msg) => {
                  if (msg.event.name === 'slow') await sleep(4 * CLAIM_MIN_IDLE)
                  else await sleep(2)
                  handled.push({ i: msg.event.payload as number, consumer: msg.consumer, delivery: msg.deliveryCount })
                },
                { concurrency: 10 },
              ),
            )
            .subscribe(),
        )
      })
      await waitFor(() => handled.length >= 500, 20_000, '500 handled')
      await waitFor(async () => (await pendingByConsumer(redis, streamKey(topic), group)).total === 0, 5_000, 'nothing pending')
      await sleep(2 * CLAIM_MIN_IDLE) // a late duplicate would show up now
      const count = new Map<number, number>()
      for (const h of handled) count.set(h.i, (count.get(h.i) ?? 0) + 1)
      const duplicates = [...count.entries()].filter(([, n]) => n > 1)
      console.log(`[long handler] handled ${handled.length}, distinct ${count.size}, duplicates ${duplicates.length}`)
      expect(duplicates).toEqual([])
      expect(count.size).toBe(500)
      expect(handled.every((h) => h.delivery === 1)).toBe(true)
      expect(await managers[0]!.deadLetters.count(topic)).toBe(0)
    } finally {
      subs.forEach((s) => s.unsubscribe())
      await Promise.all(managers.map((m) => m.close()))
      await redis.quit()
    }
  })
})
