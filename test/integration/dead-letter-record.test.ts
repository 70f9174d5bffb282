/**
 * What a dead letter holds (issue 11, bug 10) and how it is moved (issue 15,
 * item 8): deliveries and handler runs apart, the error's class, a capped
 * stack and the consumer; the entry copied server-side by id; an entry too
 * wide for one XADD stored as one encoded field.
 */
import { describe, expect, it } from 'vitest'
import { encodeEvent, newEvent, type Message } from '../../src/index.js'
import { testEvents, waitFor } from '../support/events.js'
import { newRedis, randomName } from '../support/redis.js'

const streamKey = (topic: string): string => `event:stream:{${topic}}`
const dlqKey = (topic: string): string => `event:dlq:{${topic}}`

/** Publishes one event and reads it into `group` (pending on consumer `c1`); returns its stream id. */
async function pendingEntry(events: ReturnType<typeof testEvents>, topic: string, group: string, fields: readonly string[]): Promise<string> {
  await events.backend.ensureGroup(topic, group, 'latest')
  const [id] = await events.backend.append(topic, [fields])
  const reader = events.backend.createReader()
  const read = await reader.read(topic, group, 'c1', { count: 10, blockMs: 0, from: 'new' })
  await reader.close()
  expect(read.map((e) => e.id)).toEqual([id])
  return id as string
}

const inputBytes = async (redis: ReturnType<typeof newRedis>): Promise<number> =>
  Number(/total_net_input_bytes:(\d+)/.exec(await redis.info('stats'))?.[1])

describe('the dead-letter record', () => {
  it('stores and reads back deliveries, handler runs, error class, a stack of at most 4 KiB and the consumer', async () => {
    const events = testEvents()
    const topic = randomName('dlq-rec')
    const group = randomName('g')
    const id = await pendingEntry(events, topic, group, encodeEvent(newEvent('order.placed', { n: 1 }), 1_000_000))
    const stack = `TypeError: bad total\n${'    at somewhere (é.ts:1:1)\n'.repeat(500)}`
    await events.backend.deadLetter(topic, group, [{ id, fields: null, error: 'bad total', attempts: 1, handlerRuns: 4, errorClass: 'TypeError', stack, consumer: 'c1' }], 0)
    const [letter] = await events.deadLetters.list(topic)
    expect(letter).toMatchObject({ originalId: id, group, error: 'bad total', deliveries: 1, attempts: 1, handlerRuns: 4, errorClass: 'TypeError', consumer: 'c1' })
    expect(letter?.event?.name).toBe('order.placed')
    expect(Buffer.byteLength(letter?.stack ?? '', 'utf8')).toBeLessThanOrEqual(4_096)
    expect(Buffer.byteLength(letter?.stack ?? '', 'utf8')).toBeGreaterThan(4_000)
    expect(stack.startsWith(letter?.stack ?? 'x')).toBe(true)
    expect(letter?.fields).toMatchObject({ dlq_deliveries: '1', dlq_attempts: '1', dlq_handler_runs: '4', dlq_error_class: 'TypeError', dlq_consumer: 'c1' })
  })

  it('a handler failing in process: handler runs and deliveries are recorded apart, with the error class and consumer', async () => {
    const events = testEvents({ maxRetries: 3, retryBackoff: 1 })
    const topic = randomName('dlq-runs')
    const group = randomName('g')
    let runs = 0
    const sub = events.subscribe(topic, group, () => {
      runs++
      throw new RangeError(`run ${String(runs)} failed`)
    }, { consumer: 'worker-1' })
    await events.publish(topic, newEvent('order.placed', { n: 1 }))
    await waitFor(async () => (await events.deadLetters.count(topic)) === 1, 20_000, 'one dead letter')
    await sub.unsubscribe()
    const [letter] = await events.deadLetters.list(topic)
    expect(letter?.errorClass).toBe('RangeError')
    expect(letter?.error).toMatch(/run \d+ failed/)
    expect(letter?.consumer).toBe('worker-1')
    expect(letter?.stack).toMatch(/RangeError/)
    expect(letter?.deliveries).toBeGreaterThanOrEqual(1)
    expect((letter?.handlerRuns ?? 0) + (letter?.deliveries ?? 0)).toBeGreaterThan(1)
    expect(letter?.handlerRuns).toBeLessThanOrEqual(runs)
  }, 30_000)

  it('reads letters written before these fields existed (dlq_attempts only)', async () => {
    const events = testEvents()
    const topic = randomName('dlq-old')
    const redis = newRedis()
    try {
      await redis.xadd(dlqKey(topic), '*', ...encodeEvent(newEvent('old', 1), 1_000_000), 'dlq_original_id', '1-0', 'dlq_group', 'g', 'dlq_error', 'boom', 'dlq_attempts', '3', 'dlq_failed_at', '5')
      const [letter] = await events.deadLetters.list(topic)
      expect(letter).toMatchObject({ deliveries: 3, attempts: 3, handlerRuns: null, errorClass: null, stack: null, consumer: null, error: 'boom', failedAt: 5 })
      expect(letter?.event?.name).toBe('old')
    } finally {
      await redis.quit()
    }
  })
})

describe('the dead-letter move', () => {
  it('copies the entry from the stream by id: a large entry is not sent back as script arguments', async () => {
    const events = testEvents({ maxPayloadBytes: 16 * 1024 * 1024 })
    const topic = randomName('dlq-big')
    const group = randomName('g')
    const redis = newRedis()
    try {
      const big = 'x'.repeat(8 * 1024 * 1024)
      const id = await pendingEntry(events, topic, group, encodeEvent(newEvent('big', big), 16 * 1024 * 1024))
      const before = await inputBytes(redis)
      // The letter's fields are ignored: what the stream holds is what the DLQ gets.
      await events.backend.deadLetter(topic, group, [{ id, fields: ['not', 'these'], error: 'too big', attempts: 1 }], 0)
      const sent = (await inputBytes(redis)) - before
      expect(sent).toBeLessThan(64 * 1024) // the 8 MiB crossed the network once, when it was read
      const [letter] = await events.deadLetters.list(topic)
      expect(letter?.event?.payload).toBe(big)
      expect(letter?.fields['not']).toBeUndefined()
      expect((await redis.xpending(streamKey(topic), group))[0]).toBe(0)
    } finally {
      await redis.quit()
    }
  })

  it('stores an entry of 10,000 fields (too wide for one XADD in a script) as one encoded field, reads it back whole, replays its event', async () => {
    const events = testEvents()
    const topic = randomName('dlq-wide')
    const group = randomName('g')
    const redis = newRedis()
    try {
      const extra: string[] = []
      for (let i = 0; i < 10_000; i++) extra.push(`f${String(i)}`, String(i))
      const event = newEvent('wide', { ok: true })
      const id = await pendingEntry(events, topic, group, [...encodeEvent(event, 1_000_000), ...extra])
      const [dlqId] = await events.backend.deadLetter(topic, group, [{ id, fields: null, error: 'too wide', attempts: 1 }], 0)
      expect(dlqId).not.toBe('')
      const raw = await redis.xrange(dlqKey(topic), '-', '+')
      const stored = raw[0]?.[1] ?? []
      expect(stored.filter((_, i) => i % 2 === 0)).toEqual(['dlq_fields', 'dlq_original_id', 'dlq_group', 'dlq_error', 'dlq_attempts', 'dlq_deliveries', 'dlq_failed_at'])
      const [letter] = await events.deadLetters.list(topic)
      expect(Object.keys(letter?.fields ?? {}).filter((k) => /^f\d+$/.test(k))).toHaveLength(10_000)
      expect(letter?.fields['f9999']).toBe('9999')
      expect(letter?.event?.id).toBe(event.id)
      expect((await redis.xpending(streamKey(topic), group))[0]).toBe(0)

      // Replay: still too wide for one XADD, so its event's own fields go back (for its group only).
      const replayed = await events.deadLetters.replay(topic, letter?.dlqId ?? '')
      expect(replayed).not.toBeNull()
      const [back] = await redis.xrange(streamKey(topic), replayed ?? '', replayed ?? '')
      const fields = back?.[1] ?? []
      expect(fields[fields.indexOf('id') + 1]).toBe(event.id)
      expect(fields[fields.indexOf('replay_group') + 1]).toBe(group)
      expect(fields).not.toContain('f1')
    } finally {
      await redis.quit()
    }
  })

  it('moves a letter whose entry was trimmed meanwhile: no body, still acked', async () => {
    const events = testEvents()
    const topic = randomName('dlq-gone')
    const group = randomName('g')
    const redis = newRedis()
    try {
      const id = await pendingEntry(events, topic, group, encodeEvent(newEvent('gone', 1), 1_000_000))
      await redis.xdel(streamKey(topic), id)
      const [dlqId] = await events.backend.deadLetter(topic, group, [{ id, fields: null, error: 'gone', attempts: 2 }], 0)
      expect(dlqId).not.toBe('')
      const [letter] = await events.deadLetters.list(topic)
      expect(letter).toMatchObject({ originalId: id, event: null, deliveries: 2 })
      expect((await redis.xpending(streamKey(topic), group))[0]).toBe(0)
    } finally {
      await redis.quit()
    }
  })

  it('keeps consuming: a dead-lettered message does not stop the others', async () => {
    const events = testEvents({ maxRetries: 0 })
    const topic = randomName('dlq-flow')
    const group = randomName('g')
    const handled: string[] = []
    const sub = events.topic(topic).consume({ group }).subscribe((m: Message) => {
      handled.push(m.event.name)
      void (m.event.name === 'bad' ? m.deadLetter(new TypeError('nope')) : m.ack())
    })
    await events.publishBatch(topic, [newEvent('good', 1), newEvent('bad', 2), newEvent('good', 3)])
    await waitFor(async () => handled.length === 3 && (await events.deadLetters.count(topic)) === 1)
    sub.unsubscribe()
    const [letter] = await events.deadLetters.list(topic)
    expect(letter).toMatchObject({ errorClass: 'TypeError', error: 'nope', deliveries: 1 })
  })
})
