/**
 * Adversarial tests of the compact wire format (issue 14: `meta` JSON array +
 * `payload`). Entries written by hand (another producer, a bug, an attacker)
 * with a hostile `meta` must each be dead-lettered as malformed on their
 * first delivery, pollute no prototype, and stop nothing: the good events
 * around them, of both layouts, are handled. Dead letters of one layout are
 * replayed by a manager writing the other; the CLI tails and counts a mixed
 * stream.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Subscription as RxSubscription } from 'rxjs'
import { runCli } from '../../src/cli/run.js'
import { createEventManager, newEvent, type EventManager, type EventManagerOptions, type Message } from '../../src/index.js'
import { waitFor } from '../support/events.js'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { newRedis, randomName } from '../support/redis.js'

const MAX_PAYLOAD = 4_000
const streamKey = (topic: string): string => `event:stream:{${topic}}`

let server: RedisServer

beforeAll(async () => {
  server = await startRedisServer()
}, 30_000)

afterAll(async () => {
  await server.stop()
})

function manager(options: EventManagerOptions = {}): EventManager {
  return createEventManager({ redisUrl: server.url, env: {}, maxPayloadBytes: MAX_PAYLOAD, maxRetries: 0, retryBackoff: 10, delayedQueueEnabled: false, ...options })
}

/** A JSON array nested `depth` levels deep. */
const nested = (depth: number): string => '['.repeat(depth) + ']'.repeat(depth)

describe('hostile compact entries', () => {
  it('each hostile meta is dead-lettered as malformed on its first delivery; the good events of both layouts are handled', async () => {
    const topic = randomName('adv-meta')
    const group = randomName('g')
    const redis = newRedis(server.url)
    const events = manager({ wireFormat: 'compact' })
    const classic = manager({ wireFormat: 'fields' })
    let sub: RxSubscription | undefined
    try {
      const key = streamKey(topic)
      const ok = (id: string, extra: unknown[] = []): string => JSON.stringify([id, 'n', 1, {}, ...extra])
      const hostile: Record<string, { fields: string[]; reason: RegExp }> = {
        notJson: { fields: ['meta', '["a","n",1,{}', 'payload', '1'], reason: /^invalid_field:/ },
        empty: { fields: ['meta', '', 'payload', '1'], reason: /^invalid_field:/ },
        object: { fields: ['meta', '{"__proto__":{"polluted":1},"0":"a","length":4}', 'payload', '1'], reason: /^invalid_field:/ },
        tooShort: { fields: ['meta', '["a","n",1]', 'payload', '1'], reason: /^invalid_field:/ },
        tooLong: { fields: ['meta', '["a","n",1,{},null,null,"x"]', 'payload', '1'], reason: /^invalid_field:/ },
        deep: { fields: ['meta', nested(100_000), 'payload', '1'], reason: /^invalid_field:/ },
        deepHeaders: { fields: ['meta', '["a","n",1,{"h":{"x":1}}]', 'payload', '1'], reason: /^invalid_field:/ },
        idNumber: { fields: ['meta', '[1,"n",1,{}]', 'payload', '1'], reason: /^invalid_field:/ },
        idEmpty: { fields: ['meta', '["","n",1,{}]', 'payload', '1'], reason: /^invalid_field:/ },
        nameNull: { fields: ['meta', '["a",null,1,{}]', 'payload', '1'], reason: /^invalid_field:/ },
        tsString: { fields: ['meta', '["a","n","5",{}]', 'payload', '1'], reason: /^invalid_field:/ },
        tsInfinite: { fields: ['meta', '["a","n",1e999,{}]', 'payload', '1'], reason: /^invalid_field:/ },
        headersArray: { fields: ['meta', '["a","n",1,["x"]]', 'payload', '1'], reason: /^invalid_headers:/ },
        headersNull: { fields: ['meta', '["a","n",1,null]', 'payload', '1'], reason: /^invalid_headers:/ },
        headerNumber: { fields: ['meta', '["a","n",1,{"h":1}]', 'payload', '1'], reason: /^invalid_headers:/ },
        cidNumber: { fields: ['meta', '["a","n",1,{},7]', 'payload', '1'], reason: /^invalid_field:/ },
        traceObject: { fields: ['meta', '["a","n",1,{},null,{}]', 'payload', '1'], reason: /^invalid_field:/ },
        noPayload: { fields: ['meta', ok('a')], reason: /^missing_field:/ },
        metaTwice: { fields: ['meta', ok('a'), 'meta', ok('b'), 'payload', '1'], reason: /^duplicate_field:/ },
        metaAndId: { fields: ['meta', ok('a'), 'id', 'b', 'payload', '1'], reason: /^duplicate_field:/ },
        metaAndName: { fields: ['name', 'x', 'meta', ok('a'), 'payload', '1'], reason: /^duplicate_field:/ },
        metaAndHeaders: { fields: ['meta', ok('a'), 'payload', '1', 'headers', '{}'], reason: /^duplicate_field:/ },
        metaAndTs: { fields: ['meta', ok('a'), 'payload', '1', 'ts', '1'], reason: /^duplicate_field:/ },
        payloadTwice: { fields: ['meta', ok('a'), 'payload', '1', 'payload', '2'], reason: /^duplicate_field:/ },
        oversizePayload: { fields: ['meta', ok('a'), 'payload', JSON.stringify('x'.repeat(2 * MAX_PAYLOAD))], reason: /^payload_too_large:/ },
        badPayload: { fields: ['meta', ok('a'), 'payload', '{"truncated":'], reason: /^malformed_json:/ },
        protoHeadersDeep: { fields: ['meta', '["p","n",1,{"__proto__":{"polluted":"1"}}]', 'payload', '1'], reason: /^invalid_field:/ },
        hugeBadMeta: { fields: ['meta', `["a","n",1,{"h":"${'x'.repeat(2_000_000)}"}`, 'payload', '1'], reason: /^invalid_field:/ },
      }
      const written = new Map<string, string>()
      for (const [name, { fields }] of Object.entries(hostile)) written.set((await redis.xadd(key, '*', ...fields)) ?? '', name)
      // a valid compact entry whose headers try to pollute a prototype: a plain event with no such header
      const protoHeaders = await redis.xadd(key, '*', 'meta', '["proto","proto.headers",1,{"__proto__":"polluted","constructor":"c"}]', 'payload', '{"__proto__":{"polluted":1},"v":1}')
      const good = Array.from({ length: 200 }, (_, i) => newEvent('good', { i }))
      for (let i = 0; i < good.length; i += 2) {
        await events.publish(topic, good[i] as ReturnType<typeof newEvent>)
        await classic.publish(topic, good[i + 1] as ReturnType<typeof newEvent>)
      }

      const handled: number[] = []
      const deliveries = new Map<string, number>()
      const proto: { headers: Record<string, string>; payload: unknown }[] = []
      sub = events
        .topic(topic)
        .consume({ group, startFrom: 'beginning', batchSize: 7 })
        .subscribe((m: Message) => {
          deliveries.set(m.streamId, (deliveries.get(m.streamId) ?? 0) + 1)
          if (m.event.name === 'proto.headers') proto.push({ headers: { ...m.event.headers }, payload: m.event.payload })
          else if (m.event.name === 'good') handled.push((m.event.payload as { i: number }).i)
          else {
            try {
              expect(m.event.payload).toBeDefined() // the lazy payload check: dead-letters a malformed one and throws
            } catch {
              return
            }
          }
          void m.ack()
        })
      const bad = Object.keys(hostile).length
      await waitFor(() => handled.length === good.length, 20_000, 'every good event handled')
      await waitFor(async () => (await events.deadLetters.count(topic)) >= bad, 10_000, `${bad} dead letters`)
      await waitFor(async () => Number((await redis.xpending(key, group))[0]) === 0, 10_000, 'nothing pending')

      expect(handled.sort((a, b) => a - b)).toEqual(good.map((_, i) => i))
      const letters = await events.deadLetters.list(topic, { count: 100 })
      expect(letters).toHaveLength(bad)
      for (const letter of letters) {
        const name = written.get(letter.originalId) ?? 'unknown'
        expect(`${name}: ${letter.error}`).toMatch(new RegExp(`^${name}: ${(hostile[name]?.reason ?? /^$/).source.slice(1)}`))
        expect(letter.attempts).toBe(1)
      }
      for (const [id] of written) expect(deliveries.get(id) ?? 0).toBeLessThanOrEqual(1)
      expect(proto).toHaveLength(1)
      expect(deliveries.get(protoHeaders ?? '')).toBe(1)
      expect(proto[0]?.headers).toEqual({ constructor: 'c' })
      expect(proto[0]?.payload).toEqual({ v: 1 })
      expect(({} as Record<string, unknown>)['polluted']).toBeUndefined()
      expect(Object.prototype).not.toHaveProperty('polluted')
      expect(Object.getPrototypeOf(proto[0]?.payload)).not.toHaveProperty('polluted')
      expect((await events.health()).ok).toBe(true)
    } finally {
      sub?.unsubscribe()
      await redis.quit()
      await events.close()
      await classic.close()
    }
  }, 60_000)
})

describe('mixed layouts across managers', () => {
  for (const [from, to] of [
    ['compact', 'fields'],
    ['fields', 'compact'],
  ] as const) {
    it(`a ${from} entry dead-lettered and replayed by a ${to} manager reaches the failed group once, intact`, async () => {
      const topic = randomName(`adv-replay-${from}`)
      const group = randomName('g')
      const other = randomName('other')
      const writer = manager({ wireFormat: from })
      const replayer = manager({ wireFormat: to })
      const subs: RxSubscription[] = []
      try {
        const original = newEvent('flaky', { n: 1 }, { headers: { h: 'x' }, correlationId: 'c-1', timestamp: 1234 })
        await writer.publish(topic, original)
        const seen: string[] = []
        const seenOther: string[] = []
        let failOnce = true
        const line = (m: Message): string =>
          `${m.event.id}|${m.event.name}|${JSON.stringify(m.event.payload)}|${m.event.headers['h'] ?? ''}|${m.event.correlationId ?? ''}|${m.event.timestamp}`
        subs.push(
          replayer
            .topic(topic)
            .consume({ group, startFrom: 'beginning' })
            .subscribe((m: Message) => {
              seen.push(line(m))
              if (failOnce) {
                failOnce = false
                void m.deadLetter(new Error('first time'))
              } else void m.ack()
            }),
          writer
            .topic(topic)
            .consume({ group: other, startFrom: 'beginning' })
            .subscribe((m: Message) => {
              seenOther.push(line(m))
              void m.ack()
            }),
        )
        await waitFor(async () => (await replayer.deadLetters.count(topic)) === 1, 10_000, 'the dead letter')
        const [letter] = await replayer.deadLetters.list(topic)
        expect(letter?.event).toMatchObject({ id: original.id, name: 'flaky', payload: { n: 1 }, correlationId: 'c-1' })
        expect(await replayer.deadLetters.replay(topic, letter?.dlqId ?? '')).not.toBeNull()
        await waitFor(() => seen.length === 2, 10_000, 'the replay reaches the failed group')
        const expected = `${original.id}|flaky|{"n":1}|x|c-1|1234`
        expect(seen).toEqual([expected, expected])
        await new Promise((r) => setTimeout(r, 300))
        expect(seenOther).toEqual([expected]) // replay_group: only the failed group
        // and a second replay of the same letter is refused or a no-op: the letter is gone
        expect(await replayer.deadLetters.count(topic)).toBe(0)
      } finally {
        for (const s of subs) s.unsubscribe()
        await writer.close()
        await replayer.close()
      }
    })
  }

  it('the CLI tails and counts a stream of both layouts and hand-written malformed entries', async () => {
    const topic = randomName('adv-cli')
    const compact = manager({ wireFormat: 'compact' })
    const classic = manager({ wireFormat: 'fields' })
    const redis = newRedis(server.url)
    try {
      await compact.publish(topic, newEvent('c1', { a: 1 }, { headers: { h: 'v' }, correlationId: 'cid' }))
      await classic.publish(topic, newEvent('f1', { b: 2 }))
      await redis.xadd(streamKey(topic), '*', 'meta', '["x","n",1,{}]', 'id', 'y', 'payload', '1')
      await redis.xadd(streamKey(topic), '*', 'meta', '["x","n",1,{}]', 'payload', '{not json')
      await redis.xadd(streamKey(topic), '*', 'meta', nested(50_000), 'payload', '1')
      await compact.publish(topic, newEvent('c2', [1]))
      const run = async (args: string[]): Promise<{ code: number; out: string; err: string }> => {
        const out: string[] = []
        const err: string[] = []
        const code = await runCli(args, { out: (t) => out.push(t), err: (t) => err.push(t), env: { ...process.env, EVENT_REDIS_URL: server.url } })
        return { code, out: out.join('\n'), err: err.join('\n') }
      }
      const tailed = await run(['tail', topic, '--from', '0', '--count', '6', '--json'])
      expect(tailed.code).toBe(0)
      const lines = tailed.out.split('\n').filter((l) => l.trim().length > 0).map((l) => JSON.parse(l) as Record<string, unknown>)
      expect(lines).toHaveLength(6)
      expect(lines[0]).toMatchObject({ name: 'c1', payload: { a: 1 }, headers: { h: 'v' }, correlationId: 'cid' })
      expect(lines[1]).toMatchObject({ name: 'f1', payload: { b: 2 } })
      expect(String(lines[2]?.['malformed'])).toMatch(/duplicate_field/)
      expect(lines[3]).toMatchObject({ name: 'n', payload: '{not json' }) // the raw payload, shown as it is
      expect(String(lines[4]?.['malformed'])).toMatch(/invalid_field/)
      expect(lines[5]).toMatchObject({ name: 'c2', payload: [1] })
      const text = await run(['tail', topic, '--from', '0', '--count', '6'])
      expect(text.code).toBe(0)
      expect(text.out).toMatch(/not an event: duplicate_field/)
      const stats = await run(['stats', topic, '--json'])
      expect(stats.code).toBe(0)
      expect((JSON.parse(stats.out) as { topics: Record<string, { length: number }> }).topics[topic]).toMatchObject({ length: 6 })
    } finally {
      await redis.quit()
      await compact.close()
      await classic.close()
    }
  })
})

describe('hostile but valid envelopes round-trip in both layouts', () => {
  it('names, headers and correlation ids with quotes, backslashes, newlines, U+2028, emoji and JSON-looking text arrive unchanged', async () => {
    const topic = randomName('adv-roundtrip')
    const compact = manager({ wireFormat: 'compact' })
    const classic = manager({ wireFormat: 'fields' })
    try {
      const weird = 'a"b\\c\n\u2028\u2029😀],{"x":1}\t\u0000end'
      const make = (n: number): ReturnType<typeof newEvent> =>
        newEvent(`${weird}.${n}`, { s: weird, n }, { headers: { [weird]: weird, '': '', constructor: 'c', toString: 'x' }, correlationId: weird, timestamp: -5 + n })
      const sent = [make(1), make(2), make(3), make(4)]
      await compact.publish(topic, sent[0] as ReturnType<typeof newEvent>)
      await classic.publish(topic, sent[1] as ReturnType<typeof newEvent>)
      await compact.publishBatch(topic, [sent[2] as ReturnType<typeof newEvent>])
      await classic.publishBatch(topic, [sent[3] as ReturnType<typeof newEvent>])
      const got: Message[] = []
      const sub = classic
        .topic(topic)
        .consume({ group: randomName('g'), startFrom: 'beginning' })
        .subscribe((m: Message) => {
          got.push(m)
          void m.ack()
        })
      await waitFor(() => got.length === 4, 10_000, 'four events')
      sub.unsubscribe()
      got.forEach((m, i) => {
        const e = sent[i] as ReturnType<typeof newEvent>
        expect(m.event.id).toBe(e.id)
        expect(m.event.name).toBe(e.name)
        expect(m.event.timestamp).toBe(e.timestamp)
        expect(m.event.correlationId).toBe(weird)
        expect({ ...m.event.headers }).toEqual({ ...e.headers })
        expect(m.event.payload).toEqual(e.payload)
      })
      expect(await classic.deadLetters.count(topic)).toBe(0)
    } finally {
      await compact.close()
      await classic.close()
    }
  })
})

describe('the CLI on compact dead letters', () => {
  it('EVENT_WIRE_FORMAT=compact: the CLI publishes compact; dlq list/show/replay work on a compact letter and on a malformed compact entry', async () => {
    const topic = randomName('adv-cli-dlq')
    const group = randomName('g')
    const events = manager({ wireFormat: 'compact' })
    const redis = newRedis(server.url)
    const run = async (args: string[]): Promise<{ code: number; out: string; err: string }> => {
      const out: string[] = []
      const err: string[] = []
      const env = { ...process.env, EVENT_REDIS_URL: server.url, EVENT_WIRE_FORMAT: 'compact', EVENT_MAX_PAYLOAD_BYTES: String(MAX_PAYLOAD) }
      const code = await runCli(args, { out: (t) => out.push(t), err: (t) => err.push(t), env })
      return { code, out: out.join('\n'), err: err.join('\n') }
    }
    let sub: RxSubscription | undefined
    try {
      const published = await run(['publish', topic, 'user.signup', '{"userId":2}', '--header', 'source=web', '--json'])
      expect(published.code).toBe(0)
      const { streamId } = JSON.parse(published.out) as { streamId: string }
      const [entry] = await redis.xrange(streamKey(topic), streamId, streamId)
      expect(entry?.[1][0]).toBe('meta')
      await redis.xadd(streamKey(topic), '*', 'meta', '["m","n",1,{"h":1}]', 'payload', '1')
      let fail = true
      const handled: unknown[] = []
      sub = events
        .topic(topic)
        .consume({ group, startFrom: 'beginning' })
        .subscribe((m: Message) => {
          if (fail) void m.deadLetter(new Error('mailbox full'))
          else {
            handled.push(m.event.payload)
            void m.ack()
          }
        })
      await waitFor(async () => (await events.deadLetters.count(topic)) === 2, 10_000, 'two dead letters')
      const list = await run(['dlq', 'list', topic, '--json'])
      expect(list.code).toBe(0)
      const letters = (JSON.parse(list.out) as { deadLetters: { dlqId: string; originalId: string; error: string; event?: { name: string; headers: unknown; payload: unknown } }[] }).deadLetters
      const good = letters.find((l) => l.originalId === streamId)
      const bad = letters.find((l) => l.originalId !== streamId)
      expect(good?.event).toMatchObject({ name: 'user.signup', headers: { source: 'web' }, payload: { userId: 2 } })
      expect(bad?.error).toMatch(/^invalid_headers:/)
      for (const l of letters) {
        const show = await run(['dlq', 'show', topic, l.dlqId])
        expect(show.code).toBe(0)
      }
      fail = false
      const replay = await run(['dlq', 'replay', topic, good?.dlqId ?? ''])
      expect(replay.code).toBe(0)
      await waitFor(() => handled.length === 1, 10_000, 'the replayed event')
      expect(handled).toEqual([{ userId: 2 }])
      // a malformed letter replayed comes back malformed: dead-lettered again, nothing handled, nothing crashes
      const replayBad = await run(['dlq', 'replay', topic, bad?.dlqId ?? ''])
      if (replayBad.code === 0) await waitFor(async () => (await events.deadLetters.count(topic)) === 1, 10_000, 'the malformed one back in the DLQ')
      else expect(await events.deadLetters.count(topic)).toBe(1)
      await new Promise((r) => setTimeout(r, 200))
      expect(handled).toHaveLength(1)
      expect((await events.health()).ok).toBe(true)
    } finally {
      sub?.unsubscribe()
      await redis.quit()
      await events.close()
    }
  })
})
