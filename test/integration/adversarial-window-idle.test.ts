/**
 * Adversarial: a window's idleTimeout must close the last window of a quiet
 * topic. Subscription.idle() (what windows probe) requires free credit, but
 * the blocking read of new entries in flight reserves min(batchSize, free):
 * when the open window leaves batchSize or less of the credit free, the
 * source never looks idle while it waits (which is what idle means), and the
 * last window is never emitted until another event arrives.
 */
import { describe, expect, it } from 'vitest'
import { windowTumbling, type Window } from '../../operators/index.js'
import { createEventManager, newEvent, type EventManager, type Message } from '../../src/index.js'
import { waitFor } from '../support/events.js'
import { randomName, redisUrl } from '../support/redis.js'

const BASE = 1_700_000_000_000

describe.each([
  ['memory', { backend: 'memory' as const }],
  ['redis', { redisUrl: '' }],
])('idleTimeout closes the last window (%s)', (kind, base) => {
  for (const [maxPendingMessages, open] of [
    [35, 25], // free 10 = batchSize: stalls
    [undefined, 35], // the default credit (4 × batchSize = 40): free 5 < batchSize: stalls
    [60, 25], // free 35 > batchSize: closes
  ] as const) {
    it(`${open} open messages, maxPendingMessages ${String(maxPendingMessages)}, batchSize 10: the window is emitted after the idle timeout`, async () => {
      const events: EventManager = createEventManager({ env: {}, delayedQueueEnabled: false, ...(kind === 'redis' ? { redisUrl: redisUrl() } : base) })
      const topic = randomName('adv-idle')
      try {
        await events.publishBatch(topic, Array.from({ length: open }, (_, i) => newEvent('tick', { i }, { timestamp: BASE + i })))
        const windows: Window<Message>[] = []
        events
          .topic(topic)
          .consume({ group: randomName('g'), startFrom: 'beginning', batchSize: 10, claimInterval: 0, ...(maxPendingMessages === undefined ? {} : { maxPendingMessages }) })
          .pipe(windowTumbling(1_000, { idleTimeout: 100 }))
          .subscribe((w) => {
            windows.push(w)
            void w.ack()
          })
        await waitFor(() => windows.length === 1, 5_000, `the idle window (${kind})`)
        expect(windows[0]?.messages).toHaveLength(open)
      } finally {
        await events.close()
      }
    })
  }
})
