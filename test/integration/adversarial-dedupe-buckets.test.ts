/**
 * Adversarial: the retry-safe publish's bucketed dedupe (appendOnce-2.lua) on
 * a private redis-server behind a fault proxy. The guarantee under attack: a
 * re-publish of an event id within the window is never appended twice.
 *
 * - the same ids published concurrently by two managers, through publish()
 *   (coalesced ticks) and publishBatch(), again and again;
 * - a batch of 2,500 with ids repeated across the script's 1,000-id chunks,
 *   then the whole batch again;
 * - replies lost (executed, connection reset) for batches and coalesced ticks,
 *   then retried;
 * - a window of 1 ms (keys churn, expire, nothing fails) and the largest
 *   window the configuration takes (Number.MAX_SAFE_INTEGER ms);
 * - 200,000 publishes with a 500 ms window: never more than three live
 *   buckets, the hashes hold less than everything published, and they expire.
 */
import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { entryEventId } from '../support/entries.js'
import { createEventManager, newEvent, PublishOutcomeUnknownError, type Event, type EventManager, type EventManagerOptions } from '../../src/index.js'
import type { FaultProxy } from '../support/fault-proxy.js'
import { randomName } from '../support/redis.js'
import { waitFor } from '../support/events.js'
import { withProxiedServer } from '../support/proxied-server.js'

let proxy: FaultProxy
let direct: Redis
withProxiedServer((s) => ({ proxy, direct } = s), { maxRetriesPerRequest: 3 })

function manager(options: EventManagerOptions = {}): EventManager {
  return createEventManager({ redisUrl: proxy.url, env: {}, delayedQueueEnabled: false, commandTimeout: 5_000, ...options })
}

const streamKey = (topic: string): string => `event:stream:{${topic}}`

/** Event id -> how many entries of the topic carry it. */
async function copiesById(topic: string): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  for (const [, fields] of await direct.xrange(streamKey(topic), '-', '+')) {
    const id = entryEventId(fields)
    out.set(id, (out.get(id) ?? 0) + 1)
  }
  return out
}

/** Retries `attempt` while its outcome is unknown (what a caller of a retry-safe publish does). */
async function untilKnown<T>(attempt: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await attempt()
    } catch (error) {
      if (!(error instanceof PublishOutcomeUnknownError) || i > 20) throw error
    }
  }
}

describe('bucketed dedupe under attack', () => {
  it('the same 300 event ids published concurrently by two managers (publish and publishBatch, three times over): each appended once, every caller gets its one stream id', async () => {
    const one = manager()
    const two = manager()
    const topic = randomName('adv-dd-two')
    try {
      const events = Array.from({ length: 300 }, (_, i) => newEvent('e', { i }))
      const calls: Promise<string[]>[] = []
      for (let round = 0; round < 3; round++) {
        for (const [i, event] of events.entries()) {
          const m = (i + round) % 2 === 0 ? one : two
          calls.push(m.publish(topic, event).then((id) => [id]))
        }
        for (let i = 0; i < events.length; i += 37) calls.push((round % 2 === 0 ? two : one).publishBatch(topic, events.slice(i, i + 37)))
      }
      const results = await Promise.all(calls)
      const copies = await copiesById(topic)
      expect(copies.size).toBe(events.length)
      expect([...copies.values()].every((n) => n === 1)).toBe(true)
      const byEvent = new Map<string, Set<string>>()
      let k = 0
      for (let round = 0; round < 3; round++) {
        for (const event of events) {
          const set = byEvent.get(event.id) ?? new Set<string>()
          set.add(results[k++]?.[0] as string)
          byEvent.set(event.id, set)
        }
        for (let i = 0; i < events.length; i += 37) {
          const ids = results[k++] as string[]
          events.slice(i, i + 37).forEach((e, j) => byEvent.get(e.id)?.add(ids[j] as string))
        }
      }
      expect([...byEvent.values()].every((s) => s.size === 1)).toBe(true)
    } finally {
      await one.close()
      await two.close()
    }
  }, 60_000)

  it('a batch of 2,500 with ids repeated across the 1,000-id lookup chunks, then the whole batch again: each id once, repeats get the first stream id', async () => {
    const events = manager()
    const topic = randomName('adv-dd-chunks')
    try {
      const unique = Array.from({ length: 1_400 }, (_, i) => newEvent('e', { i }))
      // Positions 0…1399 are the ids once; 1400…2499 repeat ids from both sides of the 1,000 boundary.
      const batch: Event[] = [...unique]
      for (let i = 0; batch.length < 2_500; i++) batch.push(unique[(i * 7) % unique.length] as Event)
      const first = await events.publishBatch(topic, batch)
      expect(first).toHaveLength(batch.length)
      const byEvent = new Map<string, string>()
      batch.forEach((e, i) => {
        const known = byEvent.get(e.id)
        if (known === undefined) byEvent.set(e.id, first[i] as string)
        else expect(first[i]).toBe(known)
      })
      expect(await direct.xlen(streamKey(topic))).toBe(unique.length)
      const again = await events.publishBatch(topic, [...batch].reverse())
      expect(again).toEqual([...first].reverse())
      expect(await direct.xlen(streamKey(topic))).toBe(unique.length)
    } finally {
      await events.close()
    }
  }, 60_000)

  it.each(['publishBatch', 'a coalesced tick of publish()'] as const)('%s whose reply is lost (executed, connection reset), retried until known: each event once', async (how) => {
    const events = manager()
    const topic = randomName('adv-dd-lost')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const batch = Array.from({ length: 40 }, (_, i) => newEvent('e', { i }))
      const connectionsBefore = proxy.connections
      for (let round = 0; round < 5; round++) {
        proxy.dropNextReplies(1)
        if (how === 'publishBatch') {
          await untilKnown(() => events.publishBatch(topic, batch))
        } else {
          await Promise.all(batch.map((e) => untilKnown(() => events.publish(topic, e))))
        }
      }
      // Each lost reply reset a connection (ioredis re-sends the cut call on reconnect, or the caller retries it).
      expect(proxy.connections).toBeGreaterThanOrEqual(connectionsBefore + 5)
      const copies = await copiesById(topic)
      expect(copies.size).toBe(batch.length + 1)
      expect([...copies.entries()].filter(([, n]) => n !== 1)).toEqual([])
    } finally {
      await events.close()
    }
  }, 60_000)

  it('a window of 1 ms: thousands of publishes never fail, a re-publish at once is appended at most twice, and every bucket key expires', async () => {
    const events = manager({ publishDedupeWindow: 1 })
    const topic = randomName('adv-dd-1ms')
    try {
      for (let i = 0; i < 20; i++) {
        const batch = Array.from({ length: 100 }, (_, j) => newEvent('e', { i, j }))
        await Promise.all(batch.map((e) => events.publish(topic, e)))
        await events.publishBatch(topic, batch)
      }
      expect(await direct.xlen(streamKey(topic))).toBeGreaterThanOrEqual(2_000)
      expect(await direct.xlen(streamKey(topic))).toBeLessThanOrEqual(4_000)
      await waitFor(async () => (await direct.keys(`event:published:{${topic}}::*`)).length === 0, 10_000, 'the 1 ms buckets expired')
    } finally {
      await events.close()
    }
  }, 60_000)

  it('the largest window the configuration takes (Number.MAX_SAFE_INTEGER ms): publishes succeed, a retry is deduped, the bucket has an expiry', async () => {
    const events = manager({ publishDedupeWindow: Number.MAX_SAFE_INTEGER })
    const topic = randomName('adv-dd-huge')
    try {
      const event = newEvent('e', 1)
      const first = await events.publish(topic, event)
      expect(await events.publish(topic, event)).toBe(first)
      expect(await events.publishBatch(topic, [newEvent('f', 2), event])).toEqual([expect.stringMatching(/^\d+-\d+$/), first])
      expect(await direct.xlen(streamKey(topic))).toBe(2)
      const buckets = await direct.keys(`event:published:{${topic}}::*`)
      expect(buckets).toHaveLength(1)
      expect(await direct.pttl(buckets[0] as string)).toBeGreaterThan(0)
    } finally {
      await events.close()
    }
  }, 30_000)

  it('200,000 publishes with a 500 ms window: at most three live buckets at any sample, they hold less than everything published, and they expire', async () => {
    const windowMs = 500
    const events = manager({ publishDedupeWindow: windowMs })
    const topic = randomName('adv-dd-200k')
    const pattern = `event:published:{${topic}}::*`
    try {
      let most = 0
      const total = 200_000
      for (let i = 0; i < total; i += 1_000) {
        await events.publishBatch(topic, Array.from({ length: 1_000 }, (_, j) => newEvent('e', { n: i + j })))
        if (i % 10_000 === 0) most = Math.max(most, (await direct.keys(pattern)).length)
      }
      const live = await direct.keys(pattern)
      most = Math.max(most, live.length)
      expect(most).toBeLessThanOrEqual(3)
      const held = (await Promise.all(live.map((k) => direct.hlen(k)))).reduce((a, b) => a + b, 0)
      expect(held).toBeGreaterThan(0)
      expect(held).toBeLessThan(total)
      expect(await direct.xlen(streamKey(topic))).toBe(total)
      await waitFor(async () => (await direct.keys(pattern)).length === 0, 20_000, 'the buckets expired')
    } finally {
      await events.close()
    }
  }, 240_000)
})
