/**
 * Fault: malformed entries written to a topic by a raw XADD (another producer,
 * a bug, an attacker). Each must go to the dead letter queue on its first
 * delivery with a reason code, never pollute a prototype, and never stop the
 * consumer: the 1,000 good events after them are handled.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as t from 'io-ts'
import { tap, type Subscription as RxSubscription } from 'rxjs'
import { decode, handleEach } from '../../operators/index.js'
import { createEventManager, newEvent } from '../../src/index.js'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { newRedis, randomName } from '../support/redis.js'
import { waitFor } from '../support/events.js'
import { pendingByConsumer, streamKey } from './helpers.js'

const MAX_PAYLOAD = 1_000

let server: RedisServer

beforeAll(async () => {
  server = await startRedisServer()
})

afterAll(async () => {
  await server.stop()
})

describe('malformed input', () => {
  it('each malformed entry is dead-lettered on its first delivery with a reason code; 1,000 good events follow', async () => {
    const topic = randomName('malformed')
    const group = randomName('g')
    const key = streamKey(topic)
    const redis = newRedis(server.url)
    const events = createEventManager({ redisUrl: server.url, env: {}, maxPayloadBytes: MAX_PAYLOAD, maxRetries: 3, retryBackoff: 10 })
    let sub: RxSubscription | undefined
    try {
      const base = (id: string): string[] => ['id', id, 'name', 'bad.input', 'ts', String(Date.now()), 'headers', '{}']
      const bad = {
        notJson: await redis.xadd(key, '*', ...base('not-json'), 'payload', 'this is not json'),
        truncated: await redis.xadd(key, '*', ...base('truncated'), 'payload', '{"userId": 12, "email": "a@'),
        missingFields: await redis.xadd(key, '*', 'payload', '{"userId":1}'),
        proto: await redis.xadd(key, '*', ...base('proto'), 'payload', '{"__proto__":{"polluted":1}}'),
        protoHeaders: await redis.xadd(key, '*', 'id', 'proto-headers', 'name', 'bad.input', 'headers', '{"__proto__":{"polluted":1}}', 'payload', '{"constructor":{"prototype":{"polluted":1}}}'),
        oversize: await redis.xadd(key, '*', ...base('oversize'), 'payload', JSON.stringify({ userId: 1, blob: 'x'.repeat(2 * MAX_PAYLOAD) })),
      }
      const good = Array.from({ length: 1_000 }, (_, i) => newEvent('good.input', { userId: i }))
      await events.publishBatch(topic, good)

      const Payload = t.type({ userId: t.number })
      const handled: number[] = []
      const deliveries = new Map<string, number>()
      sub = events
        .topic(topic)
        .consume({ group, batchSize: 50 })
        .pipe(
          tap((m) => deliveries.set(m.streamId, (deliveries.get(m.streamId) ?? 0) + 1)),
          decode(Payload),
          handleEach((msg) => void handled.push(msg.event.payload.userId), { concurrency: 10 }),
        )
        .subscribe()
      await waitFor(() => handled.length === 1_000, 20_000, '1,000 good events handled')
      await waitFor(async () => (await events.deadLetters.count(topic)) === 6, 5_000, 'six dead letters')
      await waitFor(async () => (await pendingByConsumer(redis, key, group)).total === 0, 5_000, 'nothing pending')

      const letters = new Map((await events.deadLetters.list(topic)).map((l) => [l.originalId, l]))
      const reason = (id: string | null): string => (id === null ? 'no id' : (letters.get(id)?.error ?? 'not dead-lettered'))
      expect(reason(bad.notJson)).toMatch(/^malformed_json:/)
      expect(reason(bad.truncated)).toMatch(/^malformed_json:/)
      expect(reason(bad.missingFields)).toMatch(/^missing_field:/)
      expect(reason(bad.proto)).toMatch(/^invalid_payload:/) // the __proto__ key is dropped: {} lacks userId
      expect(reason(bad.protoHeaders)).toMatch(/^invalid_payload:/)
      expect(reason(bad.oversize)).toMatch(/^payload_too_large:/)
      for (const letter of letters.values()) expect(letter.attempts).toBe(1) // first delivery, no retry
      for (const id of Object.values(bad)) expect(deliveries.get(id ?? '') ?? 0).toBeLessThanOrEqual(1)
      expect(handled.sort((a, b) => a - b)).toEqual(good.map((_, i) => i))
      expect(({} as Record<string, unknown>)['polluted']).toBeUndefined()
      expect(Object.prototype).not.toHaveProperty('polluted')
      console.log(`[malformed] reasons: ${[...letters.values()].map((l) => l.error.split(':')[0]).join(', ')}; good handled ${handled.length}`)
    } finally {
      sub?.unsubscribe()
      await events.close()
      await redis.quit()
    }
  })
})
