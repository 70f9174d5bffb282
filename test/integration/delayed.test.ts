/**
 * Delayed events: publishWithDelay, publishAt, cancelDelayed; never visible
 * before the due time; promotion by another process's promoter; data that
 * cannot be promoted never blocks the queue.
 */
import { describe, expect, it, vi } from 'vitest'
import type { StreamBackend } from '../../src/backend/types.js'
import { DelayedPromoter } from '../../src/delayed.js'
import { newEvent, type Message } from '../../src/index.js'
import { silentLogger } from '../../src/logger.js'
import { createInstruments } from '../../src/telemetry/instruments.js'
import { sleep, testEvents, waitFor } from '../support/events.js'
import { newRedis, randomName } from '../support/redis.js'
import { entryName, fieldValue } from '../support/entries.js'

const streamKey = (topic: string): string => `event:stream:{${topic}}`
const idMs = (id: string): number => Number(id.split('-')[0])

describe('delayed events', () => {
  it('publishWithDelay and publishAt: invisible before the due time, consumed after it', async () => {
    const events = testEvents()
    const topic = randomName('delay')
    const group = randomName('g')
    const seen: Message[] = []
    const sub = events.topic(topic).consume({ group }).subscribe((m) => {
      seen.push(m)
      void m.ack()
    })
    const start = Date.now()
    const dueA = start + 300
    const dueB = start + 500
    const idA = await events.publishWithDelay(topic, newEvent('a', 1), 300)
    const idB = await events.publishAt(topic, newEvent('b', 2), new Date(dueB))
    expect(typeof idA).toBe('string')
    const redis = newRedis()
    try {
      expect(await redis.xlen(streamKey(topic))).toBe(0)
      await waitFor(() => seen.length === 2, 5_000, 'both delivered')
      expect(seen.map((m) => m.event.id)).toEqual([idA, idB])
      const [a, b] = seen as [Message, Message]
      expect(idMs(a.streamId)).toBeGreaterThanOrEqual(dueA)
      expect(idMs(b.streamId)).toBeGreaterThanOrEqual(dueB)
      console.log(`[delayed] lateness ${idMs(a.streamId) - dueA} ms and ${idMs(b.streamId) - dueB} ms`)
      expect(await events.backend.countScheduled(topic)).toBe(0)
    } finally {
      await redis.quit()
      sub.unsubscribe()
    }
  })

  it('cancelDelayed removes an event not yet due; too late once promoted', async () => {
    const events = testEvents()
    const topic = randomName('cancel')
    const kept = await events.publishWithDelay(topic, newEvent('kept', 1), 100)
    const cancelled = await events.publishWithDelay(topic, newEvent('cancelled', 2), 200)
    expect(await events.cancelDelayed(topic, cancelled)).toBe(true)
    expect(await events.cancelDelayed(topic, cancelled)).toBe(false)
    const redis = newRedis()
    try {
      await waitFor(async () => (await redis.xlen(streamKey(topic))) === 1, 5_000, 'the kept event')
      expect(await events.cancelDelayed(topic, kept)).toBe(false)
      await sleep(300)
      const entries = await redis.xrange(streamKey(topic), '-', '+')
      expect(entries.map(([, f]) => entryName(f))).toEqual(['kept'])
    } finally {
      await redis.quit()
    }
  })

  it('lists and counts the events waiting, earliest first', async () => {
    const events = testEvents()
    const topic = randomName('list')
    const late = await events.publishWithDelay(topic, newEvent('late', { n: 2 }), 3_600_000)
    const early = await events.publishWithDelay(topic, newEvent('early', { n: 1 }), 1_800_000)
    expect(await events.backend.countScheduled(topic)).toBe(2)
    const listed = await events.backend.listScheduled(topic, { count: 10 })
    expect(listed.map((e) => e.eventId)).toEqual([early, late])
    expect(listed[0]!.dueAt).toBeGreaterThan(Date.now() + 1_700_000)
    expect(entryName(listed[0]!.fields)).toBe('early')
    expect((await events.backend.listScheduled(topic, { offset: 1, count: 10 })).map((e) => e.eventId)).toEqual([late])
  })

  it('refuses a negative or non-finite delay and an invalid date', async () => {
    const events = testEvents()
    const topic = randomName('bad')
    await expect(events.publishWithDelay(topic, newEvent('x', 1), -1)).rejects.toBeInstanceOf(RangeError)
    await expect(events.publishWithDelay(topic, newEvent('x', 1), Number.NaN)).rejects.toBeInstanceOf(RangeError)
    await expect(events.publishAt(topic, newEvent('x', 1), new Date(Number.NaN))).rejects.toBeInstanceOf(RangeError)
  })

  it('events scheduled by another process are promoted by this one’s promoter, never early', async () => {
    const scheduler = testEvents({ delayedQueueEnabled: false }) // schedules, never promotes
    const consumer = testEvents({ delayedQueueCheckInterval: 200 })
    const topic = randomName('remote')
    const group = randomName('g')
    const seen: Message[] = []
    const sub = consumer.topic(topic).consume({ group }).subscribe((m) => {
      seen.push(m)
      void m.ack()
    })
    await sleep(50)
    const due = Date.now() + 300
    await scheduler.publishAt(topic, newEvent('remote', 1), due)
    await waitFor(() => seen.length === 1, 5_000, 'promoted by the consumer’s promoter')
    expect(idMs(seen[0]!.streamId)).toBeGreaterThanOrEqual(due)
    sub.unsubscribe()
  })

  // A lone surrogate cannot be stored as UTF-8: a five-field name comes back as U+FFFD; in the compact layout the
  // name is inside the JSON of `meta`, escaped (\ud800), and comes back as written.
  it.each([
    ['compact', {}, 'odd\ud800name'],
    ['fields', { wireFormat: 'fields' }, 'odd\ufffdname'],
  ] as const)('an event whose name holds a lone surrogate (%s layout), and foreign data that is not JSON, never block the queue', async (layout, options, promotedName) => {
    const events = testEvents(options)
    const topic = randomName('broken')
    const redis = newRedis()
    try {
      await redis.zadd(`event:delayed:{${topic}}`, Date.now(), 'garbage')
      await redis.hset(`event:delayed-data:{${topic}}`, 'garbage', 'not json')
      await events.publishWithDelay(topic, newEvent('odd\ud800name', 1), 50)
      await events.publishWithDelay(topic, newEvent('after', 2), 100)
      await waitFor(async () => (await redis.xlen(streamKey(topic))) === 2, 5_000, 'both promoted')
      const promoted = await redis.xrange(streamKey(topic), '-', '+')
      expect(promoted.map(([, f]) => (fieldValue(f, 'meta') === undefined ? 'fields' : 'compact'))).toEqual([layout, layout])
      expect(promoted.map(([, f]) => entryName(f))).toEqual([promotedName, 'after'])
      const [letter] = await events.deadLetters.list(topic)
      expect(letter?.error).toMatch(/^malformed_delayed_entry/)
      expect(letter?.fields['dlq_delayed_data']).toBe('not json')
      expect(await events.deadLetters.replay(topic, letter!.dlqId)).toBeNull() // nothing to replay
    } finally {
      await redis.quit()
    }
  })

  it('after a long Redis outage, promotion retries at least every 5 s', async () => {
    vi.useFakeTimers()
    const state = { calls: 0, failing: true }
    const backend = {
      promoteDue: () => {
        state.calls++
        return state.failing ? Promise.reject(new Error('connection lost')) : Promise.resolve({ promoted: 0, nextDueAt: null })
      },
    } as unknown as StreamBackend
    const promoter = new DelayedPromoter({ topic: 't', backend, checkIntervalMs: 1_000, logger: silentLogger(), instruments: createInstruments() })
    try {
      promoter.start()
      await vi.advanceTimersByTimeAsync(60_000) // a minute of failures
      const before = state.calls
      state.failing = false
      await vi.advanceTimersByTimeAsync(5_000)
      expect(state.calls).toBeGreaterThan(before)
      expect(promoter.lastRunAt).not.toBeNull()
    } finally {
      promoter.stop()
      vi.useRealTimers()
    }
  })
})
