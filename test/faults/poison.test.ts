/**
 * Fault: an event whose handler kills the process every time. With a stable
 * consumer name, each restart re-reads its pending entries; after
 * maxRetries + 1 deliveries the poison goes to the dead letter queue without
 * reaching the handler again, and the consumer goes on.
 *
 * The consumer runs with a wide credit (maxPendingMessages 100, batchSize 10)
 * and the poison sits in the middle of events published together: the first
 * crash takes every message in flight with it, but a restart re-reads its
 * pending entries in a slow start (one, then twice as many per round that did
 * not crash), so the poison is re-delivered alone and the innocent entries
 * pending with it keep their delivery counts: every one of them is handled,
 * none is dead-lettered.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEventManager, newEvent } from '../../src/index.js'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { newRedis, randomName } from '../support/redis.js'
import { waitFor } from '../support/events.js'
import type { FixtureConfig } from './fixtures/consumer.js'
import { pendingByConsumer, readLedger, startFixture, streamKey, tempLedger, type Fixture } from './helpers.js'

const MAX_RETRIES = 2

let server: RedisServer

beforeAll(async () => {
  server = await startRedisServer()
})

afterAll(async () => {
  await server.stop()
})

describe('poison message that crashes its consumer', () => {
  it('ends in the DLQ after maxRetries + 1 deliveries; the consumer then goes on', async () => {
    const topic = randomName('poison')
    const group = randomName('g')
    const ledger = tempLedger()
    const redis = newRedis(server.url)
    const events = createEventManager({ redisUrl: server.url, env: {}, maxRetries: MAX_RETRIES })
    let current: Fixture | undefined
    try {
      const before = Array.from({ length: 10 }, (_, i) => newEvent('good', i))
      const poison = newEvent('poison', 'crash')
      const after = Array.from({ length: 10 }, (_, i) => newEvent('good', 10 + i))
      await events.publishBatch(topic, [...before, poison, ...after])
      const config: FixtureConfig = {
        mode: 'consume',
        redisUrl: server.url,
        topic,
        group,
        ledger: ledger.path,
        manager: { maxRetries: MAX_RETRIES, retryBackoff: 50 },
        consume: { consumer: 'stable-worker', batchSize: 10, maxPendingMessages: 100, claimInterval: 0, blockMs: 500 },
        concurrency: 1,
        crashOn: 'poison',
      }
      let restarts = 0
      const goods = new Set([...before, ...after].map((e) => e.id))
      const settled = async (): Promise<boolean> => {
        const done = new Set(readLedger(ledger.path).filter((l) => l.k === 'done').map((l) => l.e))
        return [...goods].every((id) => done.has(id)) && (await events.deadLetters.count(topic)) >= 1
      }
      while (!(await settled())) {
        current = startFixture(config)
        const outcome = await Promise.race([current.exited, waitFor(settled, 20_000, 'all good events handled').then(() => null)])
        if (outcome !== null) {
          expect(outcome.signal).toBe('SIGKILL')
          restarts++
          expect(restarts).toBeLessThanOrEqual(MAX_RETRIES + 1)
        }
      }
      const lines = readLedger(ledger.path)
      const poisonStarts = lines.filter((l) => l.k === 'start' && l.e === poison.id)
      expect(poisonStarts.map((l) => l.d)).toEqual([1, 2, 3]) // maxRetries + 1 deliveries reached the handler
      expect(restarts).toBe(MAX_RETRIES + 1)
      const letters = await events.deadLetters.list(topic)
      expect(letters).toHaveLength(1) // only the poison: no innocent event pending with it was dead-lettered
      const handled = new Map(lines.filter((l) => l.k === 'done').map((l) => [l.e, l.d]))
      for (const id of goods) expect(handled.get(id)).toBeLessThanOrEqual(MAX_RETRIES + 1) // every other event handled, within its delivery cap
      expect(letters[0]!.event?.id).toBe(poison.id)
      expect(letters[0]!.group).toBe(group)
      expect(letters[0]!.attempts).toBe(MAX_RETRIES + 1)
      expect(letters[0]!.error).toMatch(/delivery limit exceeded/)
      // The consumer goes on: a new event is handled by the last process.
      const late = newEvent('good', 'late')
      await events.publish(topic, late)
      await waitFor(() => readLedger(ledger.path).some((l) => l.k === 'done' && l.e === late.id), 10_000, 'a later event handled')
      await waitFor(async () => (await pendingByConsumer(redis, streamKey(topic), group)).total === 0, 5_000, 'nothing pending')
      console.log(`[poison] restarts ${restarts}; poison deliveries to the handler ${poisonStarts.length}; dead letters ${letters.length}`)
    } finally {
      await current?.stop()
      await events.close()
      await redis.quit()
      ledger.cleanup()
    }
  })
})
