/**
 * A first delivery is never a replay (window state on Redis): an entry read as
 * new (XREADGROUP `>`) was never delivered to a consumer of the group, so it
 * belongs to no window emitted before, whatever the remembered watermark and
 * window records say. It goes into an open window (or to the late policy), and
 * is never acked unemitted as "its window was settled already".
 *
 * This is how window-consumers.test.ts once lost two events: c1 emitted and
 * settled its part of the window (watermark BASE+11) before c2's engine read
 * the watermark for its first message (time BASE+2, read as new), so c2 took
 * that message for a replay of c1's settled window and acked it unemitted.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { newEvent, type Message } from '../../src/index.js'
import { windowTumbling, type Window } from '../../operators/index.js'
import { randomName } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

const BASE = 1_700_000_040_000

const stop: (() => void)[] = []
afterEach(() => {
  for (const s of stop.splice(0)) s()
})

describe('a first delivery behind the remembered watermark', () => {
  it('goes into the open window, though an earlier part of that window was emitted and settled', async () => {
    const events = testEvents()
    const later = testEvents()
    const topic = randomName('first-delivery')
    const group = randomName('g')
    const options = { group, batchSize: 10, blockMs: 100, drainTimeout: 50, claimInterval: 0 }
    const tumbling = windowTumbling<Message>(1_000, { idleTimeout: 100, maxMessages: 10 })

    // c1 emits the window [BASE, BASE+1000) early at 10 messages and settles it: the watermark is BASE+19.
    await events.publishBatch(topic, Array.from({ length: 10 }, (_, i) => newEvent('early', {}, { timestamp: BASE + 10 + i })))
    const before: Window<Message>[] = []
    const first = events
      .topic(topic)
      .consume({ ...options, consumer: 'c1' })
      .pipe(tumbling)
      .subscribe((w) => before.push(w))
    stop.push(() => first.unsubscribe())
    await waitFor(() => before.length === 1, 10_000, 'the early part of the window')
    expect(before[0]?.early).toBe(true)
    expect(await before[0]?.ack()).toBe('acked')
    // c1's process ends: no read of it is left that could take the events below.
    await events.close()

    // Two new events of that window, behind the watermark, read as new by another consumer (or a restart).
    await later.publishBatch(topic, [newEvent('late-a', {}, { timestamp: BASE + 2 }), newEvent('late-b', {}, { timestamp: BASE + 3 })])
    const after: Window<Message>[] = []
    const acked: Message[] = []
    const second = later
      .topic(topic)
      .consume({ ...options, consumer: 'c2' })
      .pipe(tumbling)
      .subscribe((w) => {
        after.push(w)
        void w.ack().then(() => acked.push(...w.messages))
      })
    stop.push(() => second.unsubscribe())
    // Before the fix they were acked unemitted (taken for a replay of the settled window): no window came.
    await waitFor(() => acked.length === 2, 10_000, 'the two new events in a window of theirs')
    expect(after.map((w) => [w.start - BASE, w.messages.map((m) => m.event.name).join(',')])).toEqual([[0, 'late-a,late-b']])
    expect(after[0]?.messages.every((m) => m.deliveryCount === 1)).toBe(true)
  })
})
