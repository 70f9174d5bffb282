/**
 * The engine against a real Redis: giving back keeps delivery counts
 * (XCLAIM … IDLE … RETRYCOUNT … JUSTID), and the one-credit subscription
 * never stalls when a claim scan races the pull loop (issue 11, bug 1: the
 * memory backend's microtask order hid it).
 */
import { describe, expect, it } from 'vitest'
import { newEvent } from '../../src/index.js'
import { randomName } from '../support/redis.js'
import { sleep, testEvents, waitFor } from '../support/events.js'

describe('giving back on Redis', () => {
  it('a message one consumer drops unstarted is taken by another at its next claim tick, with its delivery count unchanged', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const group = randomName('g')
    await events.publishBatch(topic, [newEvent('a', 0), newEvent('b', 1)])
    const dropped: number[] = []
    // Consumer "dropper" drops everything (as filter(() => false)), never settling.
    events
      .topic(topic)
      .consume({ group, consumer: 'dropper', consumerTimeout: 150, claimInterval: 0, claimMinIdleTime: 200, drainTimeout: 10 })
      .subscribe((m) => void dropped.push(m.deliveryCount))
    await waitFor(() => dropped.length === 2, 5_000, 'two deliveries to the dropper')
    const kept: { name: string; count: number }[] = []
    events
      .topic(topic)
      .consume({ group, consumer: 'keeper', claimInterval: 50, claimMinIdleTime: 200, startFrom: 'beginning' })
      .subscribe((m) => {
        if (!m.begin()) return
        kept.push({ name: m.event.name, count: m.deliveryCount })
        void m.ack()
      })
    await waitFor(() => kept.length === 2, 5_000, 'the keeper taking both')
    expect(dropped).toEqual([1, 1])
    // The dropper's unstarted deliveries cost nothing.
    expect(kept.map((k) => k.count)).toEqual([1, 1])
    expect(await events.deadLetters.count(topic)).toBe(0)
  })

  it('maxPendingMessages 1 with claim ticks racing every release: every event is handled, no stall', async () => {
    const events = testEvents()
    const topic = randomName('t')
    const group = randomName('g')
    await events.publishBatch(topic, Array.from({ length: 20 }, (_, i) => newEvent('e', i)))
    const handled: number[] = []
    events
      .topic(topic)
      .consume({ group, maxPendingMessages: 1, claimInterval: 5, claimMinIdleTime: 60_000, blockMs: 100 })
      .subscribe((m) => {
        m.begin()
        setTimeout(() => {
          handled.push(m.event.payload as number)
          void m.ack()
        }, 8)
      })
    await waitFor(() => handled.length === 20, 15_000, 'all 20 handled')
    expect(handled).toEqual(Array.from({ length: 20 }, (_, i) => i))
    await sleep(50)
    const [info] = await events.backend.groups(topic)
    expect(info?.pending).toBe(0)
  })
})
