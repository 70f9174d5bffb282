import { defer, mergeMap, type Subscription as RxSubscription } from 'rxjs'
import * as t from 'io-ts'
import { describe, expect, it } from 'vitest'
import { newEvent, type Message } from '../../src/index.js'
import { ackOnComplete, decode, handleEach, matchPattern, orderedBy, retryWithBackoff, toDeadLetter } from '../../operators/index.js'
import { randomName, newRedis } from '../support/redis.js'
import { sleep, testEvents, waitFor } from '../support/events.js'

const streamKey = (topic: string): string => `event:stream:{${topic}}`
const dlqKey = (topic: string): string => `event:dlq:{${topic}}`

async function pendingCount(topic: string, group: string): Promise<number> {
  const redis = newRedis()
  try {
    const summary = (await redis.xpending(streamKey(topic), group))
    return Number(summary[0])
  } finally {
    await redis.quit()
  }
}

describe('publish and consume', () => {
  it('delivers published events with payload and headers, then acks them', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const group = randomName('g')
    const ids = await events.publishBatch(topic, [
      newEvent('user.signup', { userId: 1 }, { headers: { source: 'web-app' } }),
      newEvent('user.signup', { userId: 2 }),
    ])
    expect(ids).toHaveLength(2)
    const seen: Message[] = []
    const sub = events.topic(topic).consume({ group }).subscribe((m) => {
      seen.push(m)
      void m.ack()
    })
    await waitFor(() => seen.length === 2)
    expect(seen.map((m) => m.event.payload)).toEqual([{ userId: 1 }, { userId: 2 }])
    expect(seen[0]!.event.headers).toEqual({ source: 'web-app' })
    expect(seen[0]!.streamId).toBe(ids[0])
    expect(seen[0]!.deliveryCount).toBe(1)
    await waitFor(async () => (await pendingCount(topic, group)) === 0)
    sub.unsubscribe()
  })

  it('rejects bad topics, oversize and unserializable payloads before any I/O', async () => {
    const events = testEvents({ maxPayloadBytes: 100 })
    await expect(events.publish('bad topic', newEvent('x', 1))).rejects.toMatchObject({ code: 'INVALID_TOPIC' })
    await expect(events.publish('{x}', newEvent('x', 1))).rejects.toMatchObject({ code: 'INVALID_TOPIC' })
    const topic = randomName('t')
    await expect(events.publish(topic, newEvent('x', 'a'.repeat(200)))).rejects.toMatchObject({ code: 'PAYLOAD_TOO_LARGE' })
    const cyclic: Record<string, unknown> = {}
    cyclic['self'] = cyclic
    await expect(events.publishBatch(topic, [newEvent('ok', 1), newEvent('x', cyclic)])).rejects.toMatchObject({ code: 'SERIALIZATION_FAILED' })
    await expect(events.publish(topic, newEvent('x', 10n))).rejects.toMatchObject({ code: 'SERIALIZATION_FAILED' })
    const redis = newRedis()
    try {
      expect(await redis.exists(streamKey(topic))).toBe(0) // nothing half-written
    } finally {
      await redis.quit()
    }
  })

  it('keeps topic streams near streamMaxLen (approximate MAXLEN) for single and batch appends', async () => {
    const events = testEvents({ streamMaxLen: 100 })
    const topic = randomName('t')
    for (let i = 0; i < 10; i++) await events.publishBatch(topic, Array.from({ length: 100 }, (_, j) => newEvent('n', i * 100 + j)))
    for (let i = 0; i < 200; i++) await events.publish(topic, newEvent('one', i))
    const redis = newRedis()
    try {
      const length = await redis.xlen(streamKey(topic))
      // MAXLEN ~ trims whole macro nodes (100 entries each by default): never far above the bound, never below it.
      expect(length).toBeGreaterThanOrEqual(100)
      expect(length).toBeLessThan(400)
    } finally {
      await redis.quit()
    }
  })

  it('BatchPublisher publishes all added events in one atomic call', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const batch = events.batch(topic)
    batch.addJSON('user.action', { n: 1 }).addJSON('user.action', { n: 2 }, { k: 'v' }).add(newEvent('user.action', { n: 3 }))
    const ids = await batch.publish()
    expect(ids).toHaveLength(3)
    expect(batch.size).toBe(0)
    const redis = newRedis()
    try {
      expect(await redis.xlen(streamKey(topic))).toBe(3)
    } finally {
      await redis.quit()
    }
  })
})

describe('credit and backpressure', () => {
  it('delivers exactly maxPendingMessages while unsettled; settling one lets exactly one more in', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const group = randomName('g')
    const batch = Array.from({ length: 10_000 }, (_, i) => newEvent('n', i))
    for (let i = 0; i < batch.length; i += 1_000) await events.publishBatch(topic, batch.slice(i, i + 1_000))
    const seen: Message[] = []
    const sub = events.topic(topic).consume({ group, maxPendingMessages: 50, batchSize: 20, consumerTimeout: 600_000, drainTimeout: 50 }).subscribe((m) => seen.push(m))
    await waitFor(() => seen.length === 50)
    await sleep(300)
    expect(seen.length).toBe(50)
    await seen[0]!.ack()
    await waitFor(() => seen.length === 51)
    await sleep(300)
    expect(seen.length).toBe(51)
    expect(await pendingCount(topic, group)).toBe(50) // 51 delivered, 1 acked: the PEL never exceeds the credit
    sub.unsubscribe()
  })

  it('coalesces acks: 1,000 handled events take far fewer than 1,000 XACK calls', async () => {
    const { startRedisServer } = await import('../support/redis-server.js')
    const server = await startRedisServer()
    try {
      const events = testEvents({ redisUrl: server.url })
      const topic = randomName('t')
      const group = randomName('g')
      await events.publishBatch(topic, Array.from({ length: 1_000 }, (_, i) => newEvent('n', i)))
      const redis = newRedis(server.url)
      await redis.config('RESETSTAT')
      let handled = 0
      const sub = events.topic(topic).consume({ group, batchSize: 100 }).pipe(handleEach(() => {
        handled++
      }, { concurrency: 50 })).subscribe()
      await waitFor(() => handled === 1_000)
      await waitFor(async () => (await pendingCount2(redis, topic, group)) === 0)
      const stats = await redis.info('commandstats')
      const xack = /cmdstat_xack:calls=(\d+)/.exec(stats)
      const calls = Number(xack?.[1] ?? 0)
      expect(calls).toBeGreaterThan(0)
      expect(calls).toBeLessThan(100)
      sub.unsubscribe()
      await redis.quit()
      await events.close()
    } finally {
      await server.stop()
    }
  })
})

async function pendingCount2(redis: ReturnType<typeof newRedis>, topic: string, group: string): Promise<number> {
  const summary = (await redis.xpending(streamKey(topic), group))
  return Number(summary[0])
}

describe('settlement', () => {
  it('is idempotent and dead-lettering moves exactly one DLQ entry with the dlq_* fields', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const group = randomName('g')
    await events.publish(topic, newEvent('a', { n: 1 }))
    await events.publish(topic, newEvent('b', { n: 2 }))
    const seen: Message[] = []
    const sub = events.topic(topic).consume({ group }).subscribe((m) => seen.push(m))
    await waitFor(() => seen.length === 2)
    const [a, b] = seen as [Message, Message]
    expect(await a.ack()).toBe('acked')
    expect(await a.ack()).toBe('acked')
    expect(await a.deadLetter('late')).toBe('acked')
    expect(await b.deadLetter(new Error('boom'))).toBe('dead-lettered')
    expect(await b.nack(new Error('again'))).toBe('dead-lettered')
    expect(await b.ack()).toBe('dead-lettered')
    const redis = newRedis()
    try {
      const dlq = await redis.xrange(dlqKey(topic), '-', '+')
      expect(dlq).toHaveLength(1)
      const fields = Object.fromEntries(chunk(dlq[0]![1]))
      // The original entry in the default (compact) layout, plus the dlq_* fields.
      expect(fields).toMatchObject({ payload: '{"n":2}', dlq_original_id: b.streamId, dlq_group: group, dlq_error: 'boom', dlq_attempts: '1' })
      expect((JSON.parse(fields['meta'] ?? 'null') as unknown[]).slice(0, 2)).toEqual([b.event.id, 'b'])
      expect(Number(fields['dlq_failed_at'])).toBeGreaterThan(Date.now() - 60_000)
      await waitFor(async () => (await pendingCount(topic, group)) === 0)
    } finally {
      await redis.quit()
    }
    sub.unsubscribe()
  })

  it('nack delivers again with a higher delivery count, then to the DLQ after maxRetries + 1 deliveries', async () => {
    const events = testEvents({ maxRetries: 2, retryBackoff: 20 })
    const topic = randomName('t')
    const group = randomName('g')
    await events.publish(topic, newEvent('flaky', {}))
    const counts: number[] = []
    const sub = events.topic(topic).consume({ group }).subscribe((m) => {
      counts.push(m.deliveryCount)
      void m.nack(new Error('nope'))
    })
    await waitFor(async () => (await events.deadLetters.count(topic)) === 1)
    expect(counts).toEqual([1, 2, 3])
    const [letter] = await events.deadLetters.list(topic)
    expect(letter?.attempts).toBe(3)
    expect(letter?.error).toContain('nope')
    sub.unsubscribe()
  })

  it('a started message unsettled after consumerTimeout is nacked with a typed timeout error and redelivered once its run returned', async () => {
    const events = testEvents({ maxRetries: 1, retryBackoff: 10 })
    const topic = randomName('t')
    const group = randomName('g')
    await events.publish(topic, newEvent('forgotten', {}))
    const seen: Message[] = []
    // The timeout bounds a handler attempt: it counts from begin().
    const sub = events.topic(topic).consume({ group, consumerTimeout: 200 }).subscribe((m) => {
      if (m.begin()) seen.push(m)
    })
    await waitFor(() => seen[0]?.signal.aborted === true, 5_000, 'the attempt to time out')
    // The timed-out run has not returned (nothing settled it): its new copy is not started in this consumer yet.
    await sleep(400)
    expect(seen).toHaveLength(1)
    // The run returns (its settlement call, too late to count): now the copy is delivered again.
    expect(await seen[0]!.ack()).toBe('withdrawn')
    await waitFor(() => seen.length === 2, 5_000, 'a redelivery after the timed-out run returned')
    expect(seen[1]!.deliveryCount).toBe(2)
    await waitFor(async () => (await events.deadLetters.count(topic)) === 1, 5_000, 'the DLQ after the second timeout')
    const [letter] = await events.deadLetters.list(topic)
    expect(letter?.error).toMatch(/not settled within 200 ms/)
    sub.unsubscribe()
  })

  it('a restarted consumer with the same name first receives its own pending messages', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const group = randomName('g')
    await events.publishBatch(topic, [newEvent('a', 1), newEvent('b', 2), newEvent('c', 3)])
    const first: Message[] = []
    const sub1 = events.topic(topic).consume({ group, consumer: 'worker-1', drainTimeout: 10 }).subscribe((m) => {
      first.push(m)
      if (m.event.name === 'a') void m.ack()
    })
    await waitFor(() => first.length === 3)
    sub1.unsubscribe()
    await sleep(100)
    await events.publish(topic, newEvent('d', 4))
    const second: Message[] = []
    const sub2 = events.topic(topic).consume({ group, consumer: 'worker-1' }).subscribe((m) => {
      second.push(m)
      void m.ack()
    })
    await waitFor(() => second.length === 3)
    expect(second.map((m) => m.event.name)).toEqual(['b', 'c', 'd'])
    // b and c were emitted but never started: given back to the restarted consumer without a delivery counted.
    expect(second[0]!.deliveryCount).toBe(1)
    sub2.unsubscribe()
  })
})

describe('operators on Redis', () => {
  it('a throwing handler is retried with exponential gaps, dead-lettered once, and the subscription goes on', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const group = randomName('g')
    await events.publishBatch(topic, [newEvent('bad', {}), newEvent('good', { n: 1 }), newEvent('good', { n: 2 })])
    const attempts: number[] = []
    const good: number[] = []
    const initialDelay = 100
    const sub: RxSubscription = events
      .topic(topic)
      .consume({ group })
      .pipe(
        mergeMap((msg) =>
          defer(() => {
            if (msg.event.name === 'bad') {
              attempts.push(Date.now())
              return Promise.reject(new Error('always fails'))
            }
            good.push((msg.event.payload as { n: number }).n)
            return Promise.resolve()
          }).pipe(retryWithBackoff({ maxRetries: 3, initialDelay, jitter: 0 }), toDeadLetter(msg), ackOnComplete(msg)),
        ),
      )
      .subscribe()
    await waitFor(async () => (await events.deadLetters.count(topic)) === 1)
    expect(attempts).toHaveLength(4)
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!)
    gaps.forEach((gap, i) => expect(gap).toBeGreaterThanOrEqual(0.9 * initialDelay * 2 ** i))
    expect(good.sort()).toEqual([1, 2])
    await sleep(200)
    expect(await events.deadLetters.count(topic)).toBe(1)
    await waitFor(async () => (await pendingCount(topic, group)) === 0)
    sub.unsubscribe()
  })

  it('decode failures go to the DLQ with a readable reason; matchPattern filters by glob and headers', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const group = randomName('g')
    await events.publishBatch(topic, [
      newEvent('user.signup', { userId: 1, email: 'a@b.c' }, { headers: { source: 'web-app' } }),
      newEvent('user.signup', { userId: 'x' }, { headers: { source: 'web-app' } }),
      newEvent('user.signup', { userId: 2, email: 'd@e.f' }, { headers: { source: 'mobile' } }),
      newEvent('user.deleted', { userId: 3, email: 'g@h.i' }, { headers: { source: 'web-app' } }),
      newEvent('order.created', { userId: 4, email: 'j@k.l' }, { headers: { source: 'web-app' } }),
    ])
    const UserSignup = t.type({ userId: t.number, email: t.string })
    const handled: string[] = []
    const sub = events
      .topic(topic)
      .consume({ group })
      .pipe(
        matchPattern({ eventName: 'user.*', headers: { source: 'web-app' } }),
        decode(UserSignup),
        handleEach((msg) => void handled.push(`${msg.event.name}:${msg.event.payload.userId}`)),
      )
      .subscribe()
    await waitFor(async () => (await pendingCount(topic, group)) === 0 && handled.length === 2)
    expect(handled).toEqual(['user.signup:1', 'user.deleted:3'])
    const letters = await events.deadLetters.list(topic)
    expect(letters).toHaveLength(1)
    expect(letters[0]!.error).toMatch(/invalid_payload/)
    expect(letters[0]!.error).toMatch(/userId/)
    sub.unsubscribe()
  })
})

describe('ordering and fan-out', () => {
  it('one consumer with concurrency 1 handles 1,000 events in publish order', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const group = randomName('g')
    await events.publishBatch(topic, Array.from({ length: 1_000 }, (_, i) => newEvent('n', i)))
    const order: number[] = []
    const sub = events
      .topic(topic)
      .consume({ group, batchSize: 50 })
      .pipe(
        handleEach(
          async (m) => {
            if (Math.random() < 0.05) await sleep(1)
            order.push(m.event.payload as number)
          },
          { concurrency: 1 },
        ),
      )
      .subscribe()
    await waitFor(() => order.length === 1_000)
    expect(order).toEqual(Array.from({ length: 1_000 }, (_, i) => i))
    sub.unsubscribe()
  })

  it('orderedBy keeps per-key order over 16 keys at concurrency 8', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const group = randomName('g')
    await events.publishBatch(topic, Array.from({ length: 1_000 }, (_, i) => newEvent('n', { key: `k${i % 16}`, seq: i })))
    const perKey = new Map<string, number[]>()
    let inFlight = 0
    let maxInFlight = 0
    const sub = events
      .topic(topic)
      .consume({ group, batchSize: 100, maxPendingMessages: 200 })
      .pipe(
        orderedBy(
          (m: Message) => (m.event.payload as { key: string }).key,
          8,
          async (m) => {
            inFlight++
            maxInFlight = Math.max(maxInFlight, inFlight)
            await sleep(Math.random() * 2)
            const { key, seq } = m.event.payload as { key: string; seq: number }
            perKey.set(key, [...(perKey.get(key) ?? []), seq])
            inFlight--
            await m.ack()
          },
        ),
      )
      .subscribe()
    await waitFor(() => [...perKey.values()].reduce((n, l) => n + l.length, 0) === 1_000, 20_000)
    expect(perKey.size).toBe(16)
    for (const seqs of perKey.values()) expect(seqs).toEqual([...seqs].sort((a, b) => a - b))
    expect(maxInFlight).toBeGreaterThan(1)
    sub.unsubscribe()
  })

  it('fans out to 3 groups (each gets all) and shares within a group of 3 consumers (each once)', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const n = 300
    await events.publishBatch(topic, Array.from({ length: n }, (_, i) => newEvent('n', i)))
    const perGroup = new Map<string, number[]>()
    const subs: RxSubscription[] = []
    for (const g of ['analytics', 'notifications', 'audit']) {
      const group = randomName(g)
      perGroup.set(group, [])
      subs.push(events.topic(topic).consume({ group }).pipe(handleEach((m) => void perGroup.get(group)!.push(m.event.payload as number))).subscribe())
    }
    const shared = randomName('shared')
    const byConsumer = new Map<string, number[]>()
    for (let c = 0; c < 3; c++) {
      const name = `c${c}`
      byConsumer.set(name, [])
      subs.push(
        events
          .topic(topic)
          .consume({ group: shared, consumer: name, batchSize: 5 })
          .pipe(handleEach(async (m) => {
            byConsumer.get(name)!.push(m.event.payload as number)
            await sleep(1)
          }, { concurrency: 2 }))
          .subscribe(),
      )
    }
    await waitFor(() => [...perGroup.values()].every((l) => l.length === n) && [...byConsumer.values()].reduce((s, l) => s + l.length, 0) === n, 20_000)
    for (const list of perGroup.values()) expect(new Set(list).size).toBe(n)
    const all = [...byConsumer.values()].flat()
    expect(all).toHaveLength(n)
    expect(new Set(all).size).toBe(n)
    expect([...byConsumer.values()].filter((l) => l.length > 0).length).toBeGreaterThan(1)
    subs.forEach((s) => s.unsubscribe())
  })

  it('events.subscribe runs the one-call API with a pattern', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const group = randomName('g')
    const seen: string[] = []
    const sub = events.subscribe(topic, group, (m) => void seen.push(m.event.name), { pattern: { eventName: 'order.*' } })
    await events.publishBatch(topic, [newEvent('order.created', 1), newEvent('user.created', 2), newEvent('order.paid', 3)])
    await waitFor(() => seen.length === 2)
    await waitFor(async () => (await pendingCount(topic, group)) === 0)
    expect(seen).toEqual(['order.created', 'order.paid'])
    await sub.unsubscribe()
  })
})

function chunk(list: readonly string[]): [string, string][] {
  const out: [string, string][] = []
  for (let i = 0; i + 1 < list.length; i += 2) out.push([list[i]!, list[i + 1]!])
  return out
}

describe('shutdown', () => {
  it('waits for handlers in flight, not for messages queued in handleEach; those stay pending and come back', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const group = randomName('g')
    await events.publishBatch(topic, Array.from({ length: 30 }, (_, i) => newEvent('n', i)))
    const handled: number[] = []
    const sub = events
      .topic(topic)
      .consume({ group, consumer: 'worker', maxPendingMessages: 30, batchSize: 30 })
      .pipe(
        handleEach(
          async (m) => {
            await sleep(100)
            handled.push(m.event.payload as number)
          },
          { concurrency: 1 },
        ),
      )
      .subscribe()
    await waitFor(() => handled.length === 1)
    const started = Date.now()
    sub.unsubscribe()
    await events.close()
    // The default drain timeout is 10 s: close waited only for the one handler running.
    expect(Date.now() - started).toBeLessThan(2_000)
    expect(handled.length).toBeLessThanOrEqual(3)
    expect(await pendingCount(topic, group)).toBe(30 - handled.length)
    const again = testEvents()
    const rest: number[] = []
    const sub2 = again.topic(topic).consume({ group, consumer: 'worker' }).pipe(handleEach((m) => void rest.push(m.event.payload as number))).subscribe()
    await waitFor(() => handled.length + rest.length === 30)
    expect([...handled, ...rest].sort((a, b) => a - b)).toEqual(Array.from({ length: 30 }, (_, i) => i))
    sub2.unsubscribe()
  })
})

describe('entries too large to move in one script', () => {
  it('an entry with 5,000 fields still goes to the DLQ (stored as one encoded field, read back whole)', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const group = randomName('g')
    await events.publish(topic, newEvent('first', 1))
    const redis = newRedis()
    try {
      const junk: string[] = []
      for (let i = 0; i < 5_000; i++) junk.push(`f${i}`, 'x')
      await redis.xadd(streamKey(topic), '*', 'id', 'e-big', 'name', 'big', ...junk)
      const handled: string[] = []
      const sub = events.topic(topic).consume({ group }).pipe(handleEach((m) => void handled.push(m.event.name))).subscribe()
      await waitFor(async () => (await events.deadLetters.count(topic)) === 1 && (await pendingCount(topic, group)) === 0)
      const [letter] = await events.deadLetters.list(topic)
      expect(letter?.error).toMatch(/missing_field/)
      expect(Object.keys(letter?.fields ?? {}).filter((k) => /^f\d+$/.test(k))).toHaveLength(5_000)
      expect(letter?.fields['name']).toBe('big')
      expect(handled).toEqual(['first'])
      sub.unsubscribe()
    } finally {
      await redis.quit()
    }
  })
})
