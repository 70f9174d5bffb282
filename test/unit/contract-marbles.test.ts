/**
 * Issue #10, "Must show": a marble test of a user pipeline — `consume` on the
 * memory backend → `decode` → `handleEach` — under `TestScheduler` (the same
 * as the README's testing section), and Promise handlers under the
 * `VirtualClock`.
 */
import * as t from 'io-ts'
import { map, timer } from 'rxjs'
import { TestScheduler } from 'rxjs/testing'
import { afterEach, expect, it } from 'vitest'
import { decode, handleEach } from '../../operators/index.js'
import { newEvent } from '../../src/index.js'
import { advanceVirtualTime, closeTestEventManagers, createTestEventManager, MemoryBackend, VirtualClock } from '../../src/testing.js'

afterEach(closeTestEventManagers)

const Order = t.type({ orderId: t.number })

it('marble-testing one\'s own pipeline with TestScheduler: consume (memory backend) → decode → handleEach emit in virtual time', async () => {
  const scheduler = new TestScheduler((actual, expected) => expect(actual).toEqual(expected))
  const events = createTestEventManager()
  await events.publishBatch('orders', [
    newEvent('order.placed', { orderId: 1 }),
    newEvent('order.placed', { orderId: 'not a number' }),
    newEvent('order.placed', { orderId: 3 }),
  ])
  const outcomes = events
    .topic('orders')
    .consume({ group: 'billing' })
    .pipe(
      decode(Order),
      handleEach((msg) => timer(20, scheduler).pipe(map(() => msg.event.payload.orderId)), { scheduler }),
      map(({ message, outcome }) => `${String(message.event.payload.orderId)} ${outcome}`),
    )
  const expectation = scheduler.expectObservable(outcomes)
  await advanceVirtualTime(scheduler, 100)
  // Outside run(), one marble frame is 10 virtual ms: order 1 is done at 20, order 3 (after it) at 40.
  expectation.toBe('--a-b', { a: '1 acked', b: '3 acked' })
  scheduler.flush()
  const [letter] = await events.deadLetters.list('orders')
  expect(letter?.event?.payload).toEqual({ orderId: 'not a number' })
})

it('Promise handlers under the VirtualClock over the memory backend: 20 ms handlers and their retries take no real time', async () => {
  const clock = new VirtualClock({ start: Date.UTC(2026, 0, 1) })
  const events = createTestEventManager({ backend: new MemoryBackend({ now: () => clock.now() }) })
  await events.publishBatch('orders', [newEvent('order.placed', { orderId: 1 }), newEvent('order.placed', { orderId: 2 })])
  const log: string[] = []
  let failed = false
  events
    .topic('orders')
    .consume({ group: 'billing' })
    .pipe(
      decode(Order),
      handleEach(
        async (msg) => {
          await clock.sleep(20)
          if (msg.event.payload.orderId === 1 && !failed) {
            failed = true
            throw new Error('payment service down')
          }
        },
        { retry: { initialDelay: 1_000 }, scheduler: clock },
      ),
    )
    .subscribe(({ message, outcome }) => log.push(`${String(clock.now() - Date.UTC(2026, 0, 1))}: ${String(message.event.payload.orderId)} ${outcome}`))
  await clock.advance(2_000)
  // Order 1: fails at 20, retried after 1 s, done at 1040; order 2 runs after it (concurrency 1).
  expect(log).toEqual(['1040: 1 acked', '1060: 2 acked'])
})

// The README's example ("Testing your own handlers"), verbatim.
it('bills orders one after another, 20 ms each', async () => {
  const scheduler = new TestScheduler((actual, expected) => expect(actual).toEqual(expected))
  const events = createTestEventManager()
  await events.publishBatch('orders', [newEvent('order.placed', { orderId: 1 }), newEvent('order.placed', { orderId: 2 })])
  const outcomes = events.topic('orders').consume({ group: 'billing' }).pipe(
    decode(Order),
    handleEach(() => timer(20, scheduler), { scheduler }),  // the work, in virtual time
    map(({ message, outcome }) => `${String(message.event.payload.orderId)} ${outcome}`),
  )
  const expectation = scheduler.expectObservable(outcomes)
  await advanceVirtualTime(scheduler, 100)
  expectation.toBe('--a-b', { a: '1 acked', b: '2 acked' })
  scheduler.flush()
})
