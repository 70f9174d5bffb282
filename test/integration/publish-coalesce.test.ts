/**
 * Retry-safe publish() calls for one topic made in the same tick go to Redis as
 * ONE appendOnce script call (issue 14): each caller still gets its own stream
 * id or its own error, the order of the calls is the order in the stream, and
 * every guarantee of a single call holds (dedupe, per-call validation, a
 * Redis error reply is a BackendError, an unknown outcome names the caller's
 * event ids only).
 */
import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { createEventManager, newEvent, PublishOutcomeUnknownError, type EventManager, type EventManagerOptions } from '../../src/index.js'
import type { FaultProxy } from '../support/fault-proxy.js'
import type { RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { entryEventId } from '../support/entries.js'
import { withProxiedServer } from '../support/proxied-server.js'
import { APPEND_SEND_AT_ENTRIES, APPEND_SEND_IDLE_AT_ENTRIES } from '../../src/backend/redis/redis-backend.js'

let server: RedisServer
let proxy: FaultProxy
let direct: Redis
withProxiedServer((s) => ({ server, proxy, direct } = s), { maxRetriesPerRequest: 3 })

function manager(options: EventManagerOptions = {}, url = server.url): EventManager {
  return createEventManager({ redisUrl: url, env: {}, delayedQueueEnabled: false, commandTimeout: 3_000, ...options })
}

/** Script calls (EVALSHA and EVAL) the server has run so far. */
/**
 * The script calls `n` publishes of one tick take when nothing was in flight before them: the first call leaves at
 * APPEND_SEND_IDLE_AT_ENTRIES, the next ones (one is in flight now) at APPEND_SEND_AT_ENTRIES, the rest at the tick's end.
 */
const callsFor = (n: number): number => (n <= APPEND_SEND_IDLE_AT_ENTRIES ? 1 : 1 + Math.ceil((n - APPEND_SEND_IDLE_AT_ENTRIES) / APPEND_SEND_AT_ENTRIES))

async function scriptCalls(): Promise<number> {
  const info = await direct.info('commandstats')
  let calls = 0
  for (const match of info.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+)/g)) calls += Number(match[1])
  return calls
}

/** The event id of each entry of the topic, in stream order (either wire layout). */
async function streamEventIds(topic: string): Promise<string[]> {
  const entries = await direct.xrange(`event:stream:{${topic}}`, '-', '+')
  return entries.map(([, fields]) => entryEventId(fields))
}

describe('publish() calls of one tick are coalesced into one script call', () => {
  it('200 concurrent publishes: a first call at APPEND_SEND_IDLE_AT_ENTRIES, then one per APPEND_SEND_AT_ENTRIES, each caller its own id, stream order = call order', async () => {
    const events = manager()
    const topic = randomName('coalesce')
    try {
      await events.publish(topic, newEvent('warm.up', 0)) // script loaded, topic registered
      const published = Array.from({ length: 200 }, (_, i) => newEvent('n', { i }))
      const before = await scriptCalls()
      const ids = await Promise.all(published.map((e) => events.publish(topic, e)))
      expect(await scriptCalls()).toBe(before + callsFor(200))
      expect(callsFor(200)).toBe(3)
      expect(new Set(ids).size).toBe(200)
      const entries = await direct.xrange(`event:stream:{${topic}}`, '-', '+')
      const byStreamId = new Map(entries.map(([id, fields]) => [id, entryEventId(fields)]))
      ids.forEach((id, i) => expect(byStreamId.get(id)).toBe(published[i]?.id))
      expect((await streamEventIds(topic)).slice(1)).toEqual(published.map((e) => e.id))
    } finally {
      await events.close()
    }
  })

  it('a bad event fails alone; the same event twice in one tick is appended once; a batch stays contiguous', async () => {
    const events = manager()
    const topic = randomName('coalesce-mixed')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const a = newEvent('a', 1)
      const batch = [newEvent('b1', 1), newEvent('b2', 2), newEvent('b3', 3)]
      const c = newEvent('c', 3)
      const results = await Promise.allSettled([
        events.publish(topic, a),
        events.publish(topic, newEvent('bad', { n: 1n })),
        events.publishBatch(topic, batch),
        events.publish(topic, a),
        events.publish(topic, c),
      ])
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled'])
      expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'SERIALIZATION_FAILED' })
      const [first, , batchIds, again] = results.map((r) => (r.status === 'fulfilled' ? r.value : undefined))
      expect(again).toBe(first)
      expect(batchIds).toHaveLength(3)
      expect((await streamEventIds(topic)).slice(1)).toEqual([a.id, ...batch.map((e) => e.id), c.id])
    } finally {
      await events.close()
    }
  })

  it('a large batch goes on its own, after the calls queued before it: the stream keeps the call order', async () => {
    const events = manager()
    const topic = randomName('coalesce-large')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const a = newEvent('a', 1)
      const large = Array.from({ length: 40 }, (_, i) => newEvent('l', i))
      const c = newEvent('c', 2)
      const before = await scriptCalls()
      await Promise.all([events.publish(topic, a), events.publishBatch(topic, large), events.publish(topic, c)])
      expect(await scriptCalls()).toBe(before + 3)
      expect((await streamEventIds(topic)).slice(1)).toEqual([a.id, ...large.map((e) => e.id), c.id])
    } finally {
      await events.close()
    }
  })

  it('more than one call of entries goes as several script calls, every caller answered', async () => {
    const events = manager()
    const topic = randomName('coalesce-big')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const before = await scriptCalls()
      const ids = await Promise.all(Array.from({ length: 1_500 }, (_, i) => events.publish(topic, newEvent('n', { i }))))
      expect((await scriptCalls()) - before).toBe(callsFor(1_500))
      expect(new Set(ids).size).toBe(1_500)
      expect(await direct.xlen(`event:stream:{${topic}}`)).toBe(1_501)
    } finally {
      await events.close()
    }
  })

  for (const publishDedupeWindow of [60_000, 0]) {
    it(`dedupe window ${publishDedupeWindow}: a full coalesced call is written before the tick ends, and concurrent batches are all written at once (not behind the autopipeline's previous reply)`, async () => {
      const events = manager({ publishDedupeWindow })
      const topic = randomName('coalesce-overlap')
      try {
        await events.publish(topic, newEvent('warm.up', 0))
        const socket = (events.backend as unknown as { client: Redis }).client.stream
        // Nothing below awaits: what reaches the socket here was written by the calls themselves, in this tick.
        const idle = APPEND_SEND_IDLE_AT_ENTRIES
        const singles = Array.from({ length: idle + APPEND_SEND_AT_ENTRIES }, (_, i) => newEvent('n', { i }))
        const batches = Array.from({ length: 4 }, (_, b) => Array.from({ length: 100 }, (_, i) => newEvent('b', { b, i })))
        const start = socket.bytesWritten
        const published = singles.slice(0, idle - 1).map((e) => events.publish(topic, e))
        expect(socket.bytesWritten).toBe(start) // too few yet: waits for the tick's other publishes
        // Nothing in flight: the call leaves at APPEND_SEND_IDLE_AT_ENTRIES, for Redis to run while the tick goes on.
        published.push(events.publish(topic, singles[idle - 1] as never))
        const afterIdle = socket.bytesWritten
        expect(afterIdle).toBeGreaterThan(start)
        // That call is in flight: the next ones gather up to APPEND_SEND_AT_ENTRIES.
        for (const e of singles.slice(idle, -1)) published.push(events.publish(topic, e))
        expect(socket.bytesWritten).toBe(afterIdle)
        published.push(events.publish(topic, singles[singles.length - 1] as never))
        const afterFull = socket.bytesWritten
        expect(afterFull).toBeGreaterThan(afterIdle)
        const batched = batches.map((batch) => events.publishBatch(topic, batch))
        expect(socket.bytesWritten).toBeGreaterThan(afterFull + 4 * 100 * 20) // the four batches' entries are on their way
        const ids = [...(await Promise.all(published)), ...(await Promise.all(batched)).flat()]
        expect(new Set(ids).size).toBe(singles.length + 400)
        expect((await streamEventIds(topic)).slice(1)).toEqual([...singles, ...batches.flat()].map((e) => e.id))
        expect(await direct.xlen(`event:stream:{${topic}}`)).toBe(1 + singles.length + 400)
      } finally {
        await events.close()
      }
    })
  }

  for (const publishDedupeWindow of [60_000, 0]) {
    it(`dedupe window ${publishDedupeWindow}: a value holding "\\0" (the packed arguments' separator) is appended as it is, with the calls of its tick`, async () => {
      // The five-field layout writes the event name raw: the one place a NUL byte can reach a value (JSON escapes it).
      const events = manager({ publishDedupeWindow, wireFormat: 'fields' })
      const topic = randomName('coalesce-nul')
      try {
        await events.publish(topic, newEvent('warm.up', 0))
        const odd = newEvent('a\0b', { s: 'x\0y' })
        const around = [newEvent('before', 1), odd, newEvent('after', 2)]
        const batch = [newEvent('b\0', 1), newEvent('plain', 2)]
        const ids = await Promise.all([...around.map((e) => events.publish(topic, e)), events.publishBatch(topic, batch)])
        const entries = await direct.xrange(`event:stream:{${topic}}`, '-', '+')
        expect(entries.slice(1).map(([, fields]) => entryEventId(fields))).toEqual([...around, ...batch].map((e) => e.id))
        const names = entries.slice(1).map(([, fields]) => fields[fields.indexOf('name') + 1])
        expect(names).toEqual(['before', 'a\0b', 'after', 'b\0', 'plain'])
        expect(entries.map(([id]) => id).slice(1)).toEqual(ids.flat())
        if (publishDedupeWindow > 0) expect(await events.publish(topic, odd)).toBe(ids[1])
      } finally {
        await events.close()
      }
    })
  }

  it('with the dedupe window off, the publishes of a tick share plain append script calls (no dedupe keys)', async () => {
    const events = manager({ publishDedupeWindow: 0, streamMaxLen: 10_000 })
    const topic = randomName('coalesce-plain')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const published = Array.from({ length: 100 }, (_, i) => newEvent('n', { i }))
      const before = await scriptCalls()
      const ids = await Promise.all(published.map((e) => events.publish(topic, e)))
      expect(await scriptCalls()).toBe(before + callsFor(100))
      expect(new Set(ids).size).toBe(100)
      expect((await streamEventIds(topic)).slice(1)).toEqual(published.map((e) => e.id))
      expect(await direct.keys(`event:published:{${topic}}::*`)).toEqual([])
      expect(await direct.exists(`event:published:{${topic}}:${published[0]?.id ?? ''}`)).toBe(0)
      const again = await events.publish(topic, published[0] as never).then(() => undefined, (e: unknown) => e)
      expect(again).toBeUndefined() // appended again: nothing deduplicates
      expect(await direct.xlen(`event:stream:{${topic}}`)).toBe(102)
    } finally {
      await events.close()
    }
  })

  it('no event can fail the script part-way: a key of another type at an event\'s earlier-layout dedupe name is no record, all are appended once', async () => {
    // The dedupe lookups (the buckets' HMGET, the earlier layout's MGET) all run before the first XADD: one event's
    // odd key cannot fail the call after the events before it were appended.
    const events = manager()
    const topic = randomName('coalesce-poisoned')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const [before, poisoned, after] = [newEvent('before', 1), newEvent('poisoned', 2), newEvent('after', 3)]
      await direct.hset(`event:published:{${topic}}:${poisoned.id}`, 'x', '1')
      const results = await Promise.allSettled([before, poisoned, after].map((e) => events.publish(topic, e)))
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled'])
      expect((await streamEventIds(topic)).slice(1)).toEqual([before.id, poisoned.id, after.id])
      expect(await Promise.all([before, poisoned, after].map((e) => events.publish(topic, e)))).toEqual(results.map((r) => (r as PromiseFulfilledResult<string>).value))
    } finally {
      await events.close()
    }
  })

  it('a failed topic registration (the topic set of another type) does not fail a publish that was appended', async () => {
    const prefix = `${randomName('p')}:`
    const events = createEventManager({ redisUrl: server.url, env: {}, keyPrefix: prefix, delayedQueueEnabled: false })
    const topic = randomName('coalesce-register')
    try {
      await direct.set(`${prefix}topics`, 'not a set')
      const id = await events.publish(topic, newEvent('a', 1))
      expect(await direct.xrange(`${prefix}stream:{${topic}}`, '-', '+')).toHaveLength(1)
      expect(id).toMatch(/^\d+-\d+$/)
    } finally {
      await events.close()
    }
  })

  it('a Redis error reply reaches every caller as a BackendError (not an unknown outcome)', async () => {
    const events = manager()
    const topic = randomName('coalesce-wrongtype')
    try {
      await direct.set(`event:stream:{${topic}}`, 'not a stream')
      const errors = await Promise.all([1, 2, 3].map((n) => events.publish(topic, newEvent('a', n)).then(() => undefined, (e: unknown) => e)))
      for (const error of errors) {
        expect(error).toMatchObject({ code: 'BACKEND_ERROR' })
        expect(error).not.toBeInstanceOf(PublishOutcomeUnknownError)
      }
    } finally {
      await events.close()
    }
  })

  it('a timed-out coalesced call: each caller gets PublishOutcomeUnknownError naming its own event ids; retries append once', async () => {
    const events = manager({ commandTimeout: 500 }, proxy.url)
    const topic = randomName('coalesce-blackhole')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const single = newEvent('one', 1)
      const batch = [newEvent('b1', 1), newEvent('b2', 2)]
      proxy.blackhole(true)
      const [e1, e2] = await Promise.all([
        events.publish(topic, single).then(() => undefined, (e: unknown) => e),
        events.publishBatch(topic, batch).then(() => undefined, (e: unknown) => e),
      ])
      expect(e1).toBeInstanceOf(PublishOutcomeUnknownError)
      expect(e1).toMatchObject({ topic, eventIds: [single.id], retrySafe: true })
      expect(e2).toBeInstanceOf(PublishOutcomeUnknownError)
      expect(e2).toMatchObject({ topic, eventIds: batch.map((e) => e.id), retrySafe: true })
      proxy.blackhole(false)
      await Promise.all([events.publish(topic, single), events.publishBatch(topic, batch)])
      await Promise.all([events.publish(topic, single), events.publishBatch(topic, batch)])
      const ids = await streamEventIds(topic)
      for (const e of [single, ...batch]) expect(ids.filter((id) => id === e.id)).toHaveLength(1)
    } finally {
      proxy.blackhole(false)
      await events.close()
    }
  }, 30_000)
})
