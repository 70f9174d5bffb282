/**
 * Idle advancement on Redis (issue 12, item 9): stream time follows the clock
 * only while the subscription has nothing left to deliver, never while it is
 * back-pressured (a full credit behind a slow sink), so events that arrive in
 * order after such a pause are not late.
 */
import { describe, expect, it } from 'vitest'
import { newEvent, type Message } from '../../src/index.js'
import { windowTumbling, type Window } from '../../operators/index.js'
import { randomName } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

const BASE = 1_700_000_040_000

describe('idle advancement under backpressure', () => {
  it('in-order events after a pause caused by a slow sink are not late', async () => {
    const events = testEvents()
    const topic = randomName('idle')
    const group = randomName('g')
    // 30 events 10 ms apart: three 100 ms windows of 10
    await events.publishBatch(topic, Array.from({ length: 30 }, (_, i) => newEvent('e', { i }, { timestamp: BASE + 10 * i })))
    const windows: Window<Message>[] = []
    const subscription = events
      .topic(topic)
      .consume({ group, maxPendingMessages: 3, batchSize: 1, consumerTimeout: 30_000, drainTimeout: 50 })
      // idle after 20 ms; the sink takes 150 ms per window, so the credit of 3 is full far longer than that
      .pipe(windowTumbling(100, { idleTimeout: 20 }))
      .subscribe((w) => {
        windows.push(w)
        setTimeout(() => void w.ack(), 150)
      })
    try {
      await waitFor(() => windows.reduce((n, w) => n + w.messages.length, 0) === 30, 20_000, 'all 30 events in windows')
    } finally {
      subscription.unsubscribe()
    }
    expect(await events.deadLetters.count(topic)).toBe(0)
  })
})
