/**
 * Adversarial tests of coalesced retry-safe publishing (issue 14): publish()
 * calls for one topic made in the same tick go as one appendOnce script call.
 * These try to break it as a user would by accident and as an adversary
 * would on purpose, against a private redis-server (and a fault proxy):
 *
 * - bad events of every kind (oversize, too deep, bad topic, not an object,
 *   BigInt) in one tick with good ones: each caller its own typed error, the
 *   good ones appended in call order;
 * - publishWithDelay and publishBatch mixed into the same tick;
 * - 10,000 concurrent publishes to 50 topics: each appended once, in call
 *   order per topic;
 * - a WRONGTYPE topic in the same tick as healthy topics;
 * - a lost reply of a coalesced call, then a retry of every event: exactly one
 *   copy each;
 * - the commandTimeout bound of each call holds for calls queued in later
 *   ticks behind a stuck call.
 */
import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import {
  createEventManager,
  InvalidTopicError,
  newEvent,
  PayloadTooLargeError,
  PayloadTooDeepError,
  PublishOutcomeUnknownError,
  SerializationError,
  type Event,
  type EventManager,
  type EventManagerOptions,
} from '../../src/index.js'
import type { FaultProxy } from '../support/fault-proxy.js'
import type { RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { withProxiedServer } from '../support/proxied-server.js'

let server: RedisServer
let proxy: FaultProxy
let direct: Redis
withProxiedServer((s) => ({ server, proxy, direct } = s), { maxRetriesPerRequest: 3 })

function manager(options: EventManagerOptions = {}, url = server.url): EventManager {
  return createEventManager({ redisUrl: url, env: {}, delayedQueueEnabled: false, commandTimeout: 5_000, ...options })
}

/** The event id of each entry of the topic, in stream order (both wire layouts). */
async function streamEventIds(topic: string): Promise<string[]> {
  const entries = await direct.xrange(`event:stream:{${topic}}`, '-', '+')
  return entries.map(([, fields]) => {
    const at = fields.indexOf('id')
    if (at >= 0 && at % 2 === 0) return fields[at + 1] ?? ''
    const meta = fields[fields.indexOf('meta') + 1] ?? '[]'
    return String((JSON.parse(meta) as unknown[])[0])
  })
}

/** The settled outcome of a promise: its value, or the error. */
const outcome = <T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> =>
  p.then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error }))

/** A payload nested `depth` levels deep. */
function deep(depth: number): unknown {
  let v: unknown = 1
  for (let i = 0; i < depth; i++) v = [v]
  return v
}

describe.each(['fields', 'compact'] as const)('coalesced publish, wire format %s', (wireFormat) => {
  it('bad events of every kind in one tick: each its own typed error, the good ones appended once, in call order', async () => {
    const events = manager({ wireFormat, maxPayloadBytes: 2_000, maxPayloadDepth: 8 })
    const topic = randomName('adv-mixed')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const good = Array.from({ length: 6 }, (_, i) => newEvent('good', { i }))
      const calls: Promise<unknown>[] = [
        events.publish(topic, good[0] as Event),
        events.publish(topic, newEvent('oversize', 'x'.repeat(5_000))),
        events.publish(topic, good[1] as Event),
        events.publish(topic, newEvent('deep', deep(20))),
        events.publish('bad topic!', good[2] as Event),
        events.publish(topic, null as unknown as Event),
        events.publish(topic, newEvent('bigint', { n: 10n })),
        events.publishBatch(topic, [good[2] as Event, newEvent('oversize', 'y'.repeat(5_000))]), // all or nothing
        events.publishBatch(topic, [good[3] as Event, good[4] as Event]),
        events.publish(topic, good[5] as Event),
      ]
      const results = await Promise.all(calls.map(outcome))
      expect(results.map((r) => r.ok)).toEqual([true, false, true, false, false, false, false, false, true, true])
      const err = (i: number): unknown => (results[i] as { error: unknown }).error
      expect(err(1)).toBeInstanceOf(PayloadTooLargeError)
      expect(err(3)).toBeInstanceOf(PayloadTooDeepError)
      expect(err(4)).toBeInstanceOf(InvalidTopicError)
      expect(err(5)).toBeInstanceOf(SerializationError)
      expect(err(6)).toMatchObject({ code: 'SERIALIZATION_FAILED' })
      expect(err(7)).toBeInstanceOf(PayloadTooLargeError)
      for (const i of [1, 3, 4, 5, 6, 7]) expect(err(i)).not.toBeInstanceOf(PublishOutcomeUnknownError)
      // good[2] went only with a bad topic and inside a refused batch: never appended
      expect((await streamEventIds(topic)).slice(1)).toEqual([good[0], good[1], good[3], good[4], good[5]].map((e) => e?.id))
    } finally {
      await events.close()
    }
  })

  it('publishWithDelay and publishBatch mixed into the tick: the stream keeps the publish order; the delayed one is scheduled, not appended', async () => {
    const events = manager({ wireFormat })
    const topic = randomName('adv-delay')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const a = newEvent('a', 1)
      const delayed = newEvent('later', 2)
      const batch = [newEvent('b1', 1), newEvent('b2', 2)]
      const c = newEvent('c', 3)
      const [ida, idDelayed, idsBatch, idc] = await Promise.all([
        events.publish(topic, a),
        events.publishWithDelay(topic, delayed, 60_000),
        events.publishBatch(topic, batch),
        events.publish(topic, c),
      ])
      expect(idDelayed).toBe(delayed.id)
      expect(new Set([ida, ...idsBatch, idc]).size).toBe(4)
      expect((await streamEventIds(topic)).slice(1)).toEqual([a.id, ...batch.map((e) => e.id), c.id])
      expect(await events.cancelDelayed(topic, delayed.id)).toBe(true)
    } finally {
      await events.close()
    }
  })
})

describe('coalesced publish at scale', () => {
  it('10,000 concurrent publishes to 50 topics: each appended once, in call order per topic, each caller its own stream id', async () => {
    const events = manager({ commandTimeout: 30_000 })
    const topics = Array.from({ length: 50 }, (_, i) => randomName(`adv-many-${i}`))
    try {
      const published = new Map<string, Event[]>(topics.map((t) => [t, []]))
      const calls: Promise<string>[] = []
      const callTopics: string[] = []
      for (let i = 0; i < 10_000; i++) {
        // an uneven, interleaved spread: a few hot topics, many cold
        const topic = topics[(i * 7 + (i % 3 === 0 ? 0 : i % 50)) % 50] as string
        const event = newEvent('n', { i })
        published.get(topic)?.push(event)
        callTopics.push(topic)
        calls.push(events.publish(topic, event))
      }
      const ids = await Promise.all(calls)
      expect(new Set(ids.map((id, i) => `${callTopics[i]}/${id}`)).size).toBe(10_000)
      for (const topic of topics) {
        const expected = (published.get(topic) ?? []).map((e) => e.id)
        expect(await streamEventIds(topic)).toEqual(expected)
      }
      // each caller's id is the entry holding its event
      const topic = topics[0] as string
      const entries = new Map((await direct.xrange(`event:stream:{${topic}}`, '-', '+')).map(([id, f]) => [id, f[f.indexOf('id') + 1]]))
      ids.forEach((id, i) => {
        if (callTopics[i] === topic) expect(entries.get(id)).toBeDefined()
      })
    } finally {
      await events.close()
    }
  }, 60_000)

  it('a WRONGTYPE topic in the same tick as healthy ones: only its callers fail, with BackendError', async () => {
    const events = manager()
    const broken = randomName('adv-wrongtype')
    const healthy = randomName('adv-healthy')
    try {
      await events.publish(healthy, newEvent('warm.up', 0))
      await direct.set(`event:stream:{${broken}}`, 'not a stream')
      const good = [newEvent('g1', 1), newEvent('g2', 2)]
      const results = await Promise.all([
        outcome(events.publish(broken, newEvent('x', 1))),
        outcome(events.publish(healthy, good[0] as Event)),
        outcome(events.publish(broken, newEvent('y', 2))),
        outcome(events.publish(healthy, good[1] as Event)),
      ])
      expect(results.map((r) => r.ok)).toEqual([false, true, false, true])
      for (const r of [results[0], results[2]]) {
        expect((r as { error: unknown }).error).toMatchObject({ code: 'BACKEND_ERROR' })
        expect((r as { error: unknown }).error).not.toBeInstanceOf(PublishOutcomeUnknownError)
      }
      expect((await streamEventIds(healthy)).slice(1)).toEqual(good.map((e) => e.id))
    } finally {
      await events.close()
    }
  })
})

describe('coalesced publish under faults', () => {
  it('the reply of a coalesced call is lost: every caller gets PublishOutcomeUnknownError with only its ids; a retry of every event appends exactly one copy each', async () => {
    const events = manager({ commandTimeout: 2_000 }, proxy.url)
    const topic = randomName('adv-lost')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const singles = Array.from({ length: 30 }, (_, i) => newEvent('s', i))
      const batches = [0, 1, 2].map((b) => Array.from({ length: 3 }, (_, i) => newEvent(`b${b}`, i)))
      proxy.dropNextReplies(1)
      const first = await Promise.all([
        ...singles.map((e) => outcome(events.publish(topic, e))),
        ...batches.map((b) => outcome(events.publishBatch(topic, b))),
      ])
      // the command ran (executed, reply lost); a re-send after the reconnect is deduplicated
      expect(await direct.xlen(`event:stream:{${topic}}`)).toBe(1 + 30 + 9)
      first.forEach((r, i) => {
        if (r.ok) return
        const error = r.error
        expect(error).toBeInstanceOf(PublishOutcomeUnknownError)
        const ids = i < 30 ? [singles[i]?.id] : (batches[i - 30] ?? []).map((e) => e.id)
        expect(error).toMatchObject({ topic, eventIds: ids, retrySafe: true })
      })
      const firstIds = first.map((r) => (r.ok ? r.value : undefined))
      // retry everything, twice, in different groupings (one tick, then one by one)
      const retried = await Promise.all([...singles.map((e) => events.publish(topic, e)), ...batches.map((b) => events.publishBatch(topic, b))])
      for (const e of singles) await events.publish(topic, e)
      const streamIds = await direct.xrange(`event:stream:{${topic}}`, '-', '+')
      expect(streamIds).toHaveLength(1 + 30 + 9)
      const ids = await streamEventIds(topic)
      for (const e of [...singles, ...batches.flat()]) expect(ids.filter((id) => id === e.id)).toHaveLength(1)
      // the retry returns the stream id of the first copy
      const byEvent = new Map(streamIds.map(([sid], i) => [ids[i], sid]))
      singles.forEach((e, i) => expect(retried[i]).toBe(byEvent.get(e.id)))
      firstIds.slice(0, 30).forEach((id, i) => id === undefined || expect(id).toBe(byEvent.get(singles[i]?.id)))
    } finally {
      await events.close()
    }
  }, 30_000)

  it('a stuck call does not stretch the bound of calls made in later ticks: each rejects within commandTimeout of its own call', async () => {
    const timeout = 800
    const events = manager({ commandTimeout: timeout }, proxy.url)
    const topic = randomName('adv-bound')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      proxy.blackhole(true)
      const started: number[] = []
      const settled: number[] = []
      const calls: Promise<unknown>[] = []
      for (let k = 0; k < 4; k++) {
        // each wave in a tick of its own, 200 ms apart, behind the stuck first
        const t0 = Date.now()
        for (let j = 0; j < 5; j++) {
          const idx = started.length
          started.push(t0)
          calls.push(
            events.publish(topic, newEvent('w', { k, j })).then(
              () => (settled[idx] = -1),
              (e: unknown) => {
                settled[idx] = Date.now()
                return e
              },
            ),
          )
        }
        await new Promise((r) => setTimeout(r, 200))
      }
      const errors = await Promise.all(calls)
      for (const e of errors) expect(e).toBeInstanceOf(PublishOutcomeUnknownError)
      settled.forEach((at, i) => {
        const took = at - (started[i] ?? 0)
        // generous slack for a loaded machine, but not the stuck call's bound plus ours
        expect(took).toBeGreaterThanOrEqual(timeout - 50)
        expect(took).toBeLessThan(timeout + 1_500)
      })
    } finally {
      proxy.blackhole(false)
      await events.close()
    }
  }, 30_000)
})

describe('unknown outcomes name the right events in both wire formats', () => {
  for (const wireFormat of ['fields', 'compact'] as const) {
    for (const publishDedupeWindow of [0, 60_000]) {
      it(`${wireFormat}, dedupe window ${publishDedupeWindow}: a blackholed publish and publishBatch name their own event ids`, async () => {
        const events = manager({ wireFormat, publishDedupeWindow, commandTimeout: 400 }, proxy.url)
        const topic = randomName('adv-unknown')
        try {
          await events.publish(topic, newEvent('warm.up', 0))
          const single = newEvent('one', 1)
          const batch = [newEvent('b1', 1), newEvent('b2', 2)]
          const large = Array.from({ length: 20 }, (_, i) => newEvent('l', i))
          proxy.blackhole(true)
          const [e1, e2, e3] = await Promise.all([
            events.publish(topic, single).then(() => undefined, (e: unknown) => e),
            events.publishBatch(topic, batch).then(() => undefined, (e: unknown) => e),
            events.publishBatch(topic, large).then(() => undefined, (e: unknown) => e),
          ])
          const retrySafe = publishDedupeWindow > 0
          expect(e1).toBeInstanceOf(PublishOutcomeUnknownError)
          expect(e1).toMatchObject({ topic, eventIds: [single.id], retrySafe })
          expect(e2).toBeInstanceOf(PublishOutcomeUnknownError)
          expect(e2).toMatchObject({ topic, eventIds: batch.map((e) => e.id), retrySafe })
          expect(e3).toBeInstanceOf(PublishOutcomeUnknownError)
          expect(e3).toMatchObject({ topic, eventIds: large.map((e) => e.id), retrySafe })
        } finally {
          proxy.blackhole(false)
          await events.close()
        }
      }, 20_000)
    }
  }
})

describe('coalesced publish and the dedupe window', () => {
  it('the same event across ticks while the first call is in flight, inside a large batch of the same tick, and on another topic', async () => {
    const events = manager()
    const topic = randomName('adv-dedupe')
    const other = randomName('adv-dedupe-other')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      await events.publish(other, newEvent('warm.up', 0))
      const e = newEvent('same', 1)
      const first = events.publish(topic, e)
      await new Promise((r) => process.nextTick(r)) // the first call is sent, its reply not back
      const later = events.publish(topic, e)
      const large = [...Array.from({ length: 20 }, (_, i) => newEvent('l', i)), e]
      const [firstId, laterId, largeIds, otherId, again] = await Promise.all([
        first,
        later,
        events.publishBatch(topic, large),
        events.publish(other, e),
        events.publish(topic, e),
      ])
      expect(laterId).toBe(firstId)
      expect(largeIds[20]).toBe(firstId)
      expect(again).toBe(firstId)
      expect(otherId).not.toBe(undefined)
      const ids = (await streamEventIds(topic)).slice(1)
      expect(ids.filter((id) => id === e.id)).toHaveLength(1)
      expect(ids).toEqual([e.id, ...large.slice(0, 20).map((x) => x.id)])
      expect((await streamEventIds(other)).slice(1)).toEqual([e.id])
    } finally {
      await events.close()
    }
  })
})

describe('coalesced publish with WAIT', () => {
  it('no replica to acknowledge: every caller of one coalesced call gets ReplicationTimeoutError after one WAIT; the events are appended once, a retry appends nothing more', async () => {
    const events = manager({ publishWaitReplicas: 1, publishWaitTimeout: 200 })
    const topic = randomName('adv-wait')
    try {
      await events.publish(topic, newEvent('warm.up', 0)).catch(() => undefined)
      const info = async (): Promise<number> => Number(/cmdstat_wait:calls=(\d+)/.exec(await direct.info('commandstats'))?.[1] ?? 0)
      const waitsBefore = await info()
      const published = Array.from({ length: 50 }, (_, i) => newEvent('w', i))
      const started = Date.now()
      const results = await Promise.all(published.map((e) => outcome(events.publish(topic, e))))
      const took = Date.now() - started
      expect(await info()).toBe(waitsBefore + 1)
      for (const r of results) {
        expect(r.ok).toBe(false)
        expect((r as { error: unknown }).error).toMatchObject({ code: 'REPLICATION_TIMEOUT', wanted: 1, acknowledged: 0 })
      }
      expect(took).toBeGreaterThanOrEqual(150)
      const ids = (await streamEventIds(topic)).slice(1)
      expect(ids).toEqual(published.map((e) => e.id))
      const retried = await Promise.all(published.map((e) => outcome(events.publish(topic, e))))
      expect((await streamEventIds(topic)).slice(1)).toEqual(ids)
      expect(retried.every((r) => !r.ok)).toBe(true) // still no replica: the retry waits again, appends nothing
    } finally {
      await events.close()
    }
  })
})
