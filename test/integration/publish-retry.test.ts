/**
 * Retry-safe publishing (issue 15, item 4) through a fault-injecting TCP proxy:
 * the XADD runs on the server, its reply is lost and the connection reset; a
 * retry with the same event id must leave exactly one entry.
 */
import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { createEventManager, newEvent, PublishOutcomeUnknownError, type Event, type EventManager, type EventManagerOptions } from '../../src/index.js'
import type { FaultProxy } from '../support/fault-proxy.js'
import { randomName } from '../support/redis.js'
import { withProxiedServer } from '../support/proxied-server.js'

let proxy: FaultProxy
let direct: Redis
withProxiedServer((s) => ({ proxy, direct } = s), { maxRetriesPerRequest: 3 })

function manager(options: EventManagerOptions = {}): EventManager {
  return createEventManager({ redisUrl: proxy.url, env: {}, delayedQueueEnabled: false, commandTimeout: 3_000, ...options })
}

/** How many entries of the topic carry this event id. */
async function copies(topic: string, eventId: string): Promise<number> {
  const entries = await direct.xrange(`event:stream:{${topic}}`, '-', '+')
  return entries.filter(([, fields]) => fields[fields.indexOf('id') + 1] === eventId).length
}

/** Publishes; on an unknown outcome (and only then) publishes the same event again. Returns the error seen, if any. */
async function publishRetrying(events: EventManager, topic: string, event: Event): Promise<unknown> {
  try {
    await events.publish(topic, event)
    return undefined
  } catch (error) {
    expect(error).toBeInstanceOf(PublishOutcomeUnknownError)
    await events.publish(topic, event)
    return error
  }
}

describe('retry-safe publishing through a proxy that loses the XADD reply', () => {
  it('appends the event once: the lost reply is retried (by the client or by the caller) and deduplicated', async () => {
    const events = manager()
    const topic = randomName('retry')
    try {
      await events.publish(topic, newEvent('warm.up', 0)) // connection, script and topic registry ready
      const event = newEvent('order.placed', { n: 1 })
      proxy.dropNextReplies(1) // executed on the server, reply swallowed, connection reset
      await publishRetrying(events, topic, event)
      expect(await copies(topic, event.id)).toBe(1)
      expect(await direct.xlen(`event:stream:{${topic}}`)).toBe(2)
      // The topic's dedupe bucket says which stream id the event got, and expires (at most three windows on).
      const [bucket] = await direct.keys(`event:dedupe:{${topic}}:*`)
      expect(await direct.hget(bucket ?? '', event.id)).toMatch(/^\d+-\d+$/)
      const pttl = await direct.pttl(bucket ?? '')
      expect(pttl).toBeGreaterThan(0)
      expect(pttl).toBeLessThanOrEqual(3 * 5 * 60_000)
    } finally {
      await events.close()
    }
  }, 30_000)

  it('without the dedupe window (0) the same fault appends it twice: what the window prevents', async () => {
    const events = manager({ publishDedupeWindow: 0 })
    const topic = randomName('retry-off')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const event = newEvent('order.placed', { n: 2 })
      proxy.dropNextReplies(1)
      const error = await publishRetrying(events, topic, event)
      if (error !== undefined) expect((error as PublishOutcomeUnknownError).retrySafe).toBe(false)
      expect(await copies(topic, event.id)).toBe(2)
    } finally {
      await events.close()
    }
  }, 30_000)

  it('rejects a publish that times out in a blackhole with PublishOutcomeUnknownError; the retry appends it once', async () => {
    const events = manager({ commandTimeout: 500 })
    const topic = randomName('blackhole')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const event = newEvent('order.placed', { n: 3 })
      proxy.blackhole(true)
      const error = await events.publish(topic, event).then(() => undefined, (e: unknown) => e)
      expect(error).toBeInstanceOf(PublishOutcomeUnknownError)
      expect(error).toMatchObject({ code: 'PUBLISH_OUTCOME_UNKNOWN', topic, eventIds: [event.id], retrySafe: true })
      expect((error as Error).message).toMatch(/outcome unknown/)
      proxy.blackhole(false) // the held command may now reach the server
      await events.publish(topic, event)
      await events.publish(topic, event)
      expect(await copies(topic, event.id)).toBe(1)
    } finally {
      proxy.blackhole(false)
      await events.close()
    }
  }, 30_000)

  it('deduplicates inside a batch and across batches, returning the first stream id', async () => {
    const events = manager()
    const topic = randomName('batch')
    try {
      const a = newEvent('a', 1)
      const b = newEvent('b', 2)
      const first = await events.publishBatch(topic, [a, b])
      const again = await events.publishBatch(topic, [b, a, newEvent('c', 3)])
      expect(again.slice(0, 2)).toEqual([first[1], first[0]])
      expect(await direct.xlen(`event:stream:{${topic}}`)).toBe(3)
      expect(await events.publish(topic, a)).toBe(first[0])
    } finally {
      await events.close()
    }
  })

  it('appends the same event id again once the window has passed', async () => {
    const events = manager({ publishDedupeWindow: 200 })
    const topic = randomName('window')
    try {
      const event = newEvent('a', 1)
      const first = await events.publish(topic, event)
      expect(await events.publish(topic, event)).toBe(first)
      // Remembered in the bucket of its append or the next one (200 ms each): two buckets on it is forgotten.
      const bucket = Math.floor(Number(first.split('-')[0]) / 200)
      await expect.poll(async () => { const [s, us] = await direct.time(); return Math.floor((Number(s) * 1_000 + Number(us) / 1_000) / 200) }, { timeout: 10_000 }).toBeGreaterThanOrEqual(bucket + 2)
      expect(await events.publish(topic, event)).not.toBe(first)
      expect(await copies(topic, event.id)).toBe(2)
    } finally {
      await events.close()
    }
  })

  it('a Redis error reply is a plain BackendError: the outcome is known (nothing appended)', async () => {
    const events = manager()
    const topic = randomName('wrongtype')
    try {
      await direct.set(`event:stream:{${topic}}`, 'not a stream')
      const error = await events.publish(topic, newEvent('a', 1)).then(() => undefined, (e: unknown) => e)
      expect(error).toMatchObject({ code: 'BACKEND_ERROR' })
      expect(error).not.toBeInstanceOf(PublishOutcomeUnknownError)
    } finally {
      await events.close()
    }
  })

  it('the memory backend deduplicates the same way (one entry, the first stream id, appended again after the window)', async () => {
    let now = 1_000_000
    const { MemoryBackend } = await import('../../src/index.js')
    const backend = new MemoryBackend({ now: () => now })
    const events = createEventManager({ backend, env: {}, delayedQueueEnabled: false, publishDedupeWindow: 1_000 })
    try {
      const event = newEvent('a', 1)
      const first = await events.publish('mem', event)
      expect(await events.publish('mem', event)).toBe(first)
      expect((await events.publishBatch('mem', [event, newEvent('b', 2)]))[0]).toBe(first)
      expect((await backend.topicInfo('mem')).length).toBe(2)
      now += 1_001
      expect(await events.publish('mem', event)).not.toBe(first)
      expect((await backend.topicInfo('mem')).length).toBe(3)
    } finally {
      await events.close()
    }
  })
})
