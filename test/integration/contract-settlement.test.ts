/**
 * Issue #10, the row "void m.deadLetter() when the store fails": settlement is
 * safe to fire and forget, through the library's operators and by hand
 * (memory backend with a failing store).
 */
import { map } from 'rxjs'
import { afterEach, describe, expect, it } from 'vitest'
import { filterMessages, handleEach } from '../../operators/index.js'
import type { Message } from '../../src/consumer/message.js'
import { DecodeError } from '../../src/errors.js'
import type { EventManager, EventManagerOptions } from '../../src/index.js'
import { newEvent } from '../../src/index.js'
import type { Outcome } from '../../src/settle.js'
import { closeTestEventManagers, createTestEventManager, MemoryBackend } from '../../src/testing.js'
import { sleep, waitFor } from '../support/events.js'
import { randomName } from '../support/redis.js'

afterEach(closeTestEventManagers)


/** Test-sized timeouts: a queued or dropped message would be punished within a second. */
const FAST: EventManagerOptions = { consumerTimeout: 300, retryBackoff: 10, claimMinIdleTime: 100, claimInterval: 50, delayedQueueCheckInterval: 50 }

async function publishMany(events: EventManager, topic: string, count: number): Promise<void> {
  for (let i = 0; i < count; i += 500) {
    await events.publishBatch(
      topic,
      Array.from({ length: Math.min(500, count - i) }, (_, j) => newEvent('job', { n: i + j })),
    )
  }
}

const payloadN = (m: Message): number => (m.event.payload as { n: number }).n
/** A memory backend whose dead-letter moves and acks fail, as a store that is down would. */
class FailingStore extends MemoryBackend {
  override ack(): Promise<number> {
    return Promise.reject(new Error('XACK failed: store down'))
  }
  override deadLetter(): Promise<string[]> {
    return Promise.reject(new Error('dead-letter move failed: store down'))
  }
}

describe('void m.deadLetter() when the store fails', () => {
  it("no unhandled rejection: settlement resolves 'failed' and the entry stays pending", async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const backend = new FailingStore()
      // No claims and a long timeout: the entries that stay pending are not delivered again during the test.
      const events = createTestEventManager({ ...FAST, claimInterval: 0, consumerTimeout: 10_000, backend })
      const topic = randomName('row10')
      const group = randomName('g')
      await publishMany(events, topic, 3)
      const outcomes: Promise<Outcome>[] = []
      const handled: Outcome[] = []
      const sub = events
        .topic(topic)
        .consume({ group })
        .pipe(
          map((m) => {
            // Fire and forget, as users write it.
            if (payloadN(m) === 0) void m.deadLetter('poison')
            return m
          }),
          filterMessages((m) => payloadN(m) !== 0),
          handleEach((m) => {
            if (payloadN(m) === 1) throw new DecodeError('invalid_payload', 'bad input')
          }),
        )
        .subscribe(({ message, outcome }) => {
          handled.push(outcome)
          outcomes.push(message.deadLetter('again'))
        })
      await waitFor(() => handled.length === 2, 10_000, 'both handled')
      await sleep(100)
      sub.unsubscribe()
      expect(handled.sort()).toEqual(['failed', 'failed'])
      expect(await Promise.all(outcomes)).toEqual(['failed', 'failed'])
      expect(unhandled).toEqual([])
      const info = (await backend.groups(topic)).find((g) => g.name === group)
      expect(info?.pending).toBe(3)
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })
})
