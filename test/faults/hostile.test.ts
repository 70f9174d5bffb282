/**
 * Fault: hostile entries written by a raw XADD (issue 15, item 8): JSON nested
 * 100,000 deep, duplicate field names, invalid UTF-8. The first two go to the
 * DLQ as malformed on their first delivery and never stop good traffic;
 * invalid UTF-8 is read as U+FFFD (documented), and a dead letter keeps the
 * original bytes because the move copies the entry inside Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as t from 'io-ts'
import type { Subscription as RxSubscription } from 'rxjs'
import { decode, handleEach } from '../../operators/index.js'
import { createEventManager, newEvent, PayloadTooDeepError, type Message } from '../../src/index.js'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { newRedis, randomName } from '../support/redis.js'
import { waitFor } from '../support/events.js'
import { streamKey } from './helpers.js'

let server: RedisServer

beforeAll(async () => {
  server = await startRedisServer()
})

afterAll(async () => {
  await server.stop()
})

const dlqKey = (topic: string): string => `event:dlq:{${topic}}`
const base = (id: string): string[] => ['id', id, 'name', 'hostile', 'ts', String(Date.now()), 'headers', '{}']

describe('hostile entries', () => {
  it('JSON nested past EVENT_MAX_PAYLOAD_DEPTH and duplicate field names go to the DLQ as malformed; good traffic goes on', async () => {
    const topic = randomName('hostile')
    const group = randomName('g')
    const redis = newRedis(server.url)
    const events = createEventManager({ redisUrl: server.url, env: {}, maxRetries: 3, retryBackoff: 10, maxPayloadBytes: 4 * 1024 * 1024 })
    let sub: RxSubscription | undefined
    try {
      const key = streamKey(topic)
      const deep = `${'['.repeat(100_000)}1${']'.repeat(100_000)}`
      // XADD answers nil only with NOMKSTREAM or a failed MAXLEN/MINID id check: neither applies here, so nil fails the test.
      const xadd = async (...fields: string[]): Promise<string> => {
        const id = await redis.xadd(key, '*', ...fields)
        if (id === null) throw new Error(`XADD to ${key} answered nil`)
        return id
      }
      const ids = {
        deep: await xadd(...base('deep'), 'payload', deep),
        deepHeaders: await xadd('id', 'deep-headers', 'name', 'hostile', 'headers', `${'{"a":'.repeat(1_000)}"x"${'}'.repeat(1_000)}`, 'payload', '1'),
        duplicateName: await xadd(...base('dup-name'), 'payload', '{"userId":1}', 'name', 'forged'),
        duplicatePayload: await xadd(...base('dup-payload'), 'payload', '{"userId":1}', 'payload', '{"userId":2}'),
      }
      await events.publishBatch(topic, Array.from({ length: 200 }, (_, i) => newEvent('good', { userId: i })))
      const Payload = t.type({ userId: t.number })
      const handled: number[] = []
      sub = events.topic(topic).consume({ group, batchSize: 50 }).pipe(
        decode(Payload),
        handleEach((m) => void handled.push(m.event.payload.userId), { concurrency: 10 }),
      ).subscribe()
      await waitFor(async () => handled.length === 200 && (await events.deadLetters.count(topic)) === 4, 20_000, '200 handled, 4 dead letters')
      const letters = await events.deadLetters.list(topic)
      const reason = (id: string): string => letters.find((l) => l.originalId === id)?.error ?? 'missing'
      expect(reason(ids.deep)).toMatch(/payload_too_deep/)
      expect(reason(ids.deepHeaders)).toMatch(/payload_too_deep|invalid_headers/)
      expect(reason(ids.duplicateName)).toMatch(/duplicate_field/)
      expect(reason(ids.duplicatePayload)).toMatch(/duplicate_field/)
      for (const l of letters) expect(l.deliveries).toBe(1)
      // The dead letter holds the entry as it was, duplicates included.
      const raw = await redis.xrange(dlqKey(topic), '-', '+')
      const dup = raw.find(([, f]) => f[f.indexOf('dlq_original_id') + 1] === ids.duplicatePayload)?.[1] ?? []
      expect(dup.filter((f) => f === 'payload')).toHaveLength(2)
      expect(new Set(handled).size).toBe(200)
    } finally {
      sub?.unsubscribe()
      await events.close()
      await redis.quit()
    }
  }, 60_000)

  it('refuses to publish a payload nested past the limit, before any I/O', async () => {
    const events = createEventManager({ redisUrl: server.url, env: {}, maxPayloadDepth: 8 })
    const topic = randomName('deep-publish')
    try {
      let deep: unknown = 1
      for (let i = 0; i < 9; i++) deep = { a: deep }
      await expect(events.publish(topic, newEvent('deep', deep))).rejects.toBeInstanceOf(PayloadTooDeepError)
      expect((await events.stats(topic)).topics[topic]?.length).toBe(0)
    } finally {
      await events.close()
    }
  })

  it('invalid UTF-8 is read as U+FFFD and handled; a dead letter keeps the original bytes', async () => {
    const topic = randomName('utf8')
    const group = randomName('g')
    const redis = newRedis(server.url)
    const events = createEventManager({ redisUrl: server.url, env: {}, maxRetries: 0 })
    let sub: RxSubscription | undefined
    try {
      const payload = Buffer.concat([Buffer.from('{"s":"a'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('b"}')])
      const id = await redis.xadd(streamKey(topic), '*', ...base('bad-utf8'), 'payload', payload)
      expect(id).toEqual(expect.any(String)) // nil would be a failed append
      const seen: string[] = []
      sub = events.topic(topic).consume({ group }).subscribe((m: Message) => {
        seen.push((m.event.payload as { s: string }).s)
        void m.deadLetter(new Error('keep it for inspection'))
      })
      await waitFor(async () => (await events.deadLetters.count(topic)) === 1, 10_000, 'one dead letter')
      expect(seen).toEqual(['a\ufffd\ufffd\ufffdb'])
      const [[, fields] = ['', []]] = await redis.xrangeBuffer(dlqKey(topic), '-', '+')
      const names = fields.map((f) => f.toString('latin1'))
      expect(fields[names.indexOf('payload') + 1]?.equals(payload)).toBe(true)
      expect(names[names.indexOf('dlq_original_id') + 1]).toBe(id)
    } finally {
      sub?.unsubscribe()
      await events.close()
      await redis.quit()
    }
  })
})
