/**
 * Event-time windows and stream-stream joins on Redis, at least once: the
 * constituents of a window or join result stay in the group's pending list
 * (PEL) until the result is settled, are acked exactly once, replay after a
 * crash, never stall a full credit, and are not failed by `consumerTimeout`
 * while a window holds them.
 */
import { tap, type Subscription as RxSubscription } from 'rxjs'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { newEvent, type Message } from '../../src/index.js'
import {
  joinWithin,
  reduceWindow,
  windowSliding,
  windowTumbling,
  type JoinedPair,
  type Window,
  type WindowResult,
} from '../../operators/index.js'
import { newRedis, randomName } from '../support/redis.js'
import { sleep, testEvents, waitFor } from '../support/events.js'

/** A fixed event-time origin, aligned on 1 s windows (and on minutes). */
const BASE = 1_700_000_040_000

const streamKey = (topic: string): string => `event:stream:{${topic}}`

let redis: ReturnType<typeof newRedis>
beforeAll(() => {
  redis = newRedis()
})
afterAll(async () => {
  await redis.quit()
})

/** Subscriptions a test opened; unsubscribed after it (before its manager closes). */
const subscriptions: RxSubscription[] = []
afterEach(() => {
  for (const subscription of subscriptions.splice(0)) subscription.unsubscribe()
})

/** The size of the group's pending list (XPENDING summary). */
async function pendingCount(topic: string, group: string): Promise<number> {
  const [count] = (await redis.xpending(streamKey(topic), group)) as [number | string, ...unknown[]]
  return Number(count)
}

interface PendingEntry {
  readonly id: string
  readonly consumer: string
  readonly deliveries: number
}

/** The group's pending entries (XPENDING extended form), in stream order. */
async function pendingEntries(topic: string, group: string): Promise<PendingEntry[]> {
  const rows = (await redis.xpending(streamKey(topic), group, '-', '+', 1_000)) as [string, string, number, number][]
  return rows.map(([id, consumer, , deliveries]) => ({ id, consumer, deliveries }))
}

async function pendingIds(topic: string, group: string): Promise<string[]> {
  return (await pendingEntries(topic, group)).map((entry) => entry.id)
}

/** Counts the calls that reach each message's own `ack()` (what a Share does once its last holder acks). */
function countAcks(counts: Map<string, number>): (message: Message) => void {
  return (message) => {
    const ack = message.ack.bind(message)
    Object.defineProperty(message, 'ack', {
      value: () => {
        counts.set(message.streamId, (counts.get(message.streamId) ?? 0) + 1)
        return ack()
      },
    })
  }
}

const ids = (window: Window<Message>): string[] => window.messages.map((m) => m.streamId)
const names = (window: Window<Message>): string[] => window.messages.map((m) => m.event.name)

describe('window settlement', () => {
  it('settling a tumbling window acks each of its messages exactly once; until then they stay pending', async () => {
    const events = testEvents()
    const topic = randomName('win')
    const group = randomName('g')
    const inWindow = await events.publishBatch(
      topic,
      [100, 200, 300, 400, 500].map((dt, i) => newEvent(`e${i}`, { i }, { timestamp: BASE + dt })),
    )
    // The next window's first event moves stream time past the first window's end.
    const [next] = await events.publishBatch(topic, [newEvent('next', {}, { timestamp: BASE + 1_500 })])
    const acks = new Map<string, number>()
    const windows: Window<Message>[] = []
    subscriptions.push(
      events
        .topic(topic)
        .consume({ group, consumerTimeout: 30_000, drainTimeout: 50 })
        .pipe(tap(countAcks(acks)), windowTumbling(1_000))
        .subscribe((w) => windows.push(w)),
    )
    await waitFor(() => windows.length === 1, 5_000, 'the first window')
    const [window] = windows as [Window<Message>]
    expect(window).toMatchObject({ kind: 'window', key: '', start: BASE, end: BASE + 1_000, early: false })
    expect(ids(window)).toEqual(inWindow)

    // Emitted but unsettled: all five are pending, and the open window's message too.
    expect(await pendingCount(topic, group)).toBe(6)
    expect(acks.size).toBe(0)

    expect(await window.ack()).toBe('acked')
    await waitFor(async () => (await pendingCount(topic, group)) === 1, 5_000, 'the window to be acked')
    expect(await pendingIds(topic, group)).toEqual([next])
    expect([...acks.entries()].sort()).toEqual(inWindow.map((id) => [id, 1]))

    // Settling again changes nothing.
    expect(await window.ack()).toBe('acked')
    expect(await window.nack(new Error('too late'))).toBe('acked')
    await sleep(100)
    expect([...acks.values()]).toEqual([1, 1, 1, 1, 1])
    expect(await pendingIds(topic, group)).toEqual([next])
    expect(window.messages.every((m) => m.outcome === 'acked')).toBe(true)
  })

  it('a message in two sliding windows stays pending until both windows are settled', async () => {
    const events = testEvents()
    const topic = randomName('slide')
    const group = randomName('g')
    // 2 s windows every 1 s: a lies in [-1, 1) and [0, 2); b in [0, 2) and [1, 3); c in [1, 3) and [2, 4).
    const [a, b, c] = (await events.publishBatch(topic, [
      newEvent('a', {}, { timestamp: BASE + 500 }),
      newEvent('b', {}, { timestamp: BASE + 1_500 }),
      newEvent('c', {}, { timestamp: BASE + 2_500 }),
    ])) as [string, string, string]
    const acks = new Map<string, number>()
    const windows: Window<Message>[] = []
    subscriptions.push(
      events
        .topic(topic)
        .consume({ group, consumerTimeout: 30_000, drainTimeout: 50 })
        .pipe(tap(countAcks(acks)), windowSliding(2_000, 1_000))
        .subscribe((w) => windows.push(w)),
    )
    // c moved stream time to BASE + 2.5 s: [-1, 1) and [0, 2) have closed.
    await waitFor(() => windows.length === 2, 5_000, 'two windows')
    const [w1, w2] = windows as [Window<Message>, Window<Message>]
    expect([w1.start - BASE, w1.end - BASE, names(w1)]).toEqual([-1_000, 1_000, ['a']])
    expect([w2.start - BASE, w2.end - BASE, names(w2)]).toEqual([0, 2_000, ['a', 'b']])

    await w1.ack()
    await sleep(100)
    expect(await pendingIds(topic, group)).toEqual([a, b, c]) // w2 still holds a
    expect(acks.size).toBe(0)

    await w2.ack()
    await waitFor(async () => (await pendingCount(topic, group)) === 2, 5_000, 'a to be acked')
    expect(await pendingIds(topic, group)).toEqual([b, c]) // the open window [1, 3) still holds b
    expect(acks.get(a)).toBe(1)

    // A later event closes [1, 3) and [2, 4).
    const [d] = (await events.publishBatch(topic, [newEvent('d', {}, { timestamp: BASE + 5_000 })])) as [string]
    await waitFor(() => windows.length === 4, 5_000, 'four windows')
    const [, , w3, w4] = windows as [Window<Message>, Window<Message>, Window<Message>, Window<Message>]
    expect([w3.start - BASE, names(w3)]).toEqual([1_000, ['b', 'c']])
    expect([w4.start - BASE, names(w4)]).toEqual([2_000, ['c']])

    await w4.ack()
    await sleep(100)
    expect(await pendingIds(topic, group)).toEqual([b, c, d]) // w3 still holds b and c
    await w3.ack()
    await waitFor(async () => (await pendingCount(topic, group)) === 1, 5_000, 'b and c to be acked')
    expect(await pendingIds(topic, group)).toEqual([d])
    expect([...acks.entries()].sort()).toEqual([a, b, c].map((id) => [id, 1]))
  })

  it('a crash before the window is settled replays its messages to the consumer that claims them', async () => {
    const events = testEvents()
    const topic = randomName('crash')
    const group = randomName('g')
    const published = await events.publishBatch(
      topic,
      [0, 100, 200, 300].map((dt, i) => newEvent(`e${i}`, { i }, { timestamp: BASE + dt })),
    )
    // The first consumer holds them all in an open window (no idle advancement: it never closes).
    const first: Message[] = []
    const crashed = events
      .topic(topic)
      .consume({ group, consumer: 'first', consumerTimeout: 30_000, drainTimeout: 50 })
      .pipe(
        tap((m) => first.push(m)),
        windowTumbling(1_000),
      )
      .subscribe(() => expect.unreachable('the window cannot close'))
    await waitFor(() => first.length === published.length, 5_000, 'the first deliveries')
    expect((await pendingEntries(topic, group)).map((e) => [e.id, e.consumer, e.deliveries])).toEqual(
      published.map((id) => [id, 'first', 1]),
    )
    crashed.unsubscribe() // the crash: nothing settled

    // A second consumer claims the idle entries and windows them again.
    const windows: Window<Message>[] = []
    subscriptions.push(
      events
        .topic(topic)
        .consume({ group, consumer: 'second', consumerTimeout: 30_000, claimMinIdleTime: 300, claimInterval: 200, drainTimeout: 50 })
        .pipe(windowTumbling(1_000, { idleTimeout: 100 }))
        .subscribe((w) => windows.push(w)),
    )
    await waitFor(() => windows.length === 1, 10_000, 'the replayed window')
    const [window] = windows as [Window<Message>]
    expect(window.start).toBe(BASE)
    expect(ids(window)).toEqual(published)
    for (const m of window.messages) {
      expect(m.consumer).toBe('second')
      expect(m.deliveryCount).toBeGreaterThanOrEqual(2)
    }
    expect(first.every((m) => m.outcome === undefined)).toBe(true)
    expect((await pendingEntries(topic, group)).map((e) => e.consumer)).toEqual(published.map(() => 'second'))

    expect(await events.deadLetters.count(topic)).toBe(0) // none of them replayed late
    await window.ack()
    await waitFor(async () => (await pendingCount(topic, group)) === 0, 5_000, 'the replayed window to be acked')
  })

  it('a consumer restarted with the same name re-reads the whole window from its pending list, then new events', async () => {
    const events = testEvents()
    const topic = randomName('restart')
    const group = randomName('g')
    const published = await events.publishBatch(
      topic,
      [0, 100, 200, 300].map((dt, i) => newEvent(`e${i}`, { i }, { timestamp: BASE + dt })),
    )
    const consume = () => events.topic(topic).consume({ group, consumer: 'stable', consumerTimeout: 30_000, drainTimeout: 50 })
    const first: Message[] = []
    const crashed = consume()
      .pipe(
        tap((m) => first.push(m)),
        windowTumbling(1_000),
      )
      .subscribe(() => expect.unreachable('the window cannot close'))
    await waitFor(() => first.length === published.length, 5_000, 'the first deliveries')
    crashed.unsubscribe()
    await sleep(200) // the first subscription has stopped

    // The restarted consumer re-reads its own pending entries into one window
    // (no idle advancement), then reads the new event that closes it.
    const replayed: Message[] = []
    const windows: Window<Message>[] = []
    subscriptions.push(
      consume()
        .pipe(
          tap((m) => replayed.push(m)),
          windowTumbling(1_000),
        )
        .subscribe((w) => windows.push(w)),
    )
    // At once, not in a slow start: the window needs all of them, and holds them all.
    await waitFor(() => replayed.length === published.length, 2_000, 'the pending entries to be re-read (all held by one open window)')
    const [next] = await events.publishBatch(topic, [newEvent('next', {}, { timestamp: BASE + 1_500 })])
    await waitFor(() => windows.length === 1, 5_000, 'the replayed window')
    const [window] = windows as [Window<Message>]
    expect(ids(window)).toEqual(published)
    expect(window.early).toBe(false)
    // (Given back on unsubscribe, they keep their delivery counts: a restart after a real crash counts one more.)
    await window.ack()
    await waitFor(async () => (await pendingCount(topic, group)) === 1, 5_000, 'the replayed window to be acked')
    expect(await pendingIds(topic, group)).toEqual([next])
  })
})

describe('windows and credit', () => {
  it('a window larger than maxPendingMessages closes early instead of stalling; every event is handled and acked', async () => {
    const events = testEvents()
    const topic = randomName('credit')
    const group = randomName('g')
    const published = await events.publishBatch(
      topic,
      Array.from({ length: 20 }, (_, i) => newEvent('e', { i }, { timestamp: BASE + 10 * i })),
    )
    const windows: Window<Message>[] = []
    // The credit bounds the unsettled messages (the PEL may hold a few more for a moment: settled, their XACK in flight).
    const delivered: Message[] = []
    let maxPending = 0
    subscriptions.push(
      events
        .topic(topic)
        .consume({ group, maxPendingMessages: 5, batchSize: 10, consumerTimeout: 30_000, drainTimeout: 50 })
        .pipe(
          tap((m) => {
            delivered.push(m)
            maxPending = Math.max(maxPending, delivered.filter((d) => d.outcome === undefined).length)
          }),
        )
        // No maxOpenMessages: the messages carry their credit (creditLimit) and the window respects it.
        .pipe(windowTumbling(1_000))
        .subscribe((w) => {
          windows.push(w)
          void w.ack()
        }),
    )
    await waitFor(() => windows.reduce((n, w) => n + w.messages.length, 0) === 20, 5_000, 'all 20 events in windows')
    await waitFor(async () => (await pendingCount(topic, group)) === 0, 5_000, 'everything acked')
    expect(windows.length).toBeGreaterThanOrEqual(4)
    for (const w of windows) {
      expect(w.early).toBe(true) // stream time never reached the window's end
      expect([w.start, w.end]).toEqual([BASE, BASE + 1_000])
      expect(w.messages.length).toBeLessThanOrEqual(5)
    }
    expect(windows.flatMap(ids)).toEqual(published)
    expect(windows.flatMap((w) => w.messages).every((m) => m.outcome === 'acked' && m.deliveryCount === 1)).toBe(true)
    expect(maxPending).toBeLessThanOrEqual(5)
  })

  it('a message held by an open window is not failed by consumerTimeout; it is acked with its window', async () => {
    const events = testEvents()
    const topic = randomName('hold')
    const group = randomName('g')
    // All at the window's start: with idleTimeout, the window [BASE, BASE + 1 s) closes 1 s after they arrive.
    const published = await events.publishBatch(
      topic,
      ['a', 'b', 'c'].map((name) => newEvent(name, {}, { timestamp: BASE })),
    )
    const delivered: Message[] = []
    let deliveredAt = 0
    let emittedAt = 0
    const windows: Window<Message>[] = []
    subscriptions.push(
      events
        .topic(topic)
        .consume({ group, consumerTimeout: 300, drainTimeout: 50 })
        .pipe(
          tap((m) => {
            delivered.push(m)
            deliveredAt ||= Date.now()
          }),
          windowTumbling(1_000, { idleTimeout: 100 }),
        )
        .subscribe((w) => {
          emittedAt = Date.now()
          windows.push(w)
        }),
    )
    await waitFor(() => windows.length === 1, 5_000, 'the window')
    const [window] = windows as [Window<Message>]
    expect(emittedAt - deliveredAt).toBeGreaterThanOrEqual(900) // held three consumer timeouts
    expect(ids(window)).toEqual(published)
    // Not nacked by the timeout, never redelivered.
    expect(window.messages.map((m) => m.outcome)).toEqual([undefined, undefined, undefined])
    expect(delivered).toHaveLength(3)
    expect((await pendingEntries(topic, group)).map((e) => e.deliveries)).toEqual([1, 1, 1])

    await window.ack()
    await waitFor(async () => (await pendingCount(topic, group)) === 0, 5_000, 'the window to be acked')
    expect(window.messages.map((m) => m.outcome)).toEqual(['acked', 'acked', 'acked'])
    await sleep(400) // past one more consumer timeout: still nothing redelivered
    expect(delivered).toHaveLength(3)
  })
})

describe('aggregation and joins on Redis', () => {
  it('reduceWindow aggregates per key; settling the result acks the window', async () => {
    const events = testEvents()
    const topic = randomName('sum')
    const group = randomName('g')
    await events.publishBatch(topic, [
      newEvent('order', { user: 'u-1', amount: 10 }, { timestamp: BASE + 100 }),
      newEvent('order', { user: 'u-2', amount: 5 }, { timestamp: BASE + 200 }),
      newEvent('order', { user: 'u-1', amount: 7 }, { timestamp: BASE + 300 }),
      newEvent('order', { user: 'u-2', amount: 1 }, { timestamp: BASE + 1_100 }), // closes [0, 1 s) for every key
    ])
    type Order = { user: string; amount: number }
    const results: WindowResult<number, Message>[] = []
    subscriptions.push(
      events
        .topic(topic)
        .consume({ group, drainTimeout: 50 })
        .pipe(
          windowTumbling(1_000, { key: (m) => (m.event.payload as Order).user }),
          reduceWindow((total, m: Message) => total + (m.event.payload as Order).amount, 0),
        )
        .subscribe((r) => results.push(r)),
    )
    await waitFor(() => results.length === 2, 5_000, 'two per-user sums')
    expect(results.map((r) => [r.key, r.start - BASE, r.value, r.window.messages.length]).sort()).toEqual([
      ['u-1', 0, 17, 2],
      ['u-2', 0, 5, 1],
    ])
    expect(await pendingCount(topic, group)).toBe(4)
    await Promise.all(results.map((r) => r.ack()))
    await waitFor(async () => (await pendingCount(topic, group)) === 1, 5_000, 'the two windows to be acked')
    expect(results.every((r) => r.outcome === 'acked')).toBe(true)
  })

  it('joinWithin on two topics: a settled pair is acked once both events left the join buffer; unmatched orders come out', async () => {
    const events = testEvents()
    const orders = randomName('orders')
    const payments = randomName('payments')
    const group = randomName('g')
    type Ref = { orderId: string }
    const [o1, o2] = (await events.publishBatch(orders, [
      newEvent('order.placed', { orderId: 'o-1' }, { timestamp: BASE }),
      newEvent('order.placed', { orderId: 'o-2' }, { timestamp: BASE + 2_000 }),
    ])) as [string, string]
    const [p1] = (await events.publishBatch(payments, [newEvent('payment.received', { orderId: 'o-1' }, { timestamp: BASE + 1_000 })])) as [string]
    const results: JoinedPair<Message, Message | undefined>[] = []
    const payments$ = events.topic(payments).consume({ group, drainTimeout: 50 })
    subscriptions.push(
      events
        .topic(orders)
        .consume({ group, drainTimeout: 50 })
        .pipe(
          joinWithin(payments$, {
            leftKey: (m) => (m.event.payload as Ref).orderId,
            rightKey: (m) => (m.event.payload as Ref).orderId,
            within: 5_000,
            grace: 10_000, // the two topics are read independently: allow for the skew
            type: 'left',
          }),
        )
        .subscribe((r) => results.push(r)),
    )
    await waitFor(() => results.length === 1, 5_000, 'the pair')
    const [pair] = results as [JoinedPair<Message, Message | undefined>]
    expect([pair.key, pair.left.streamId, pair.right?.streamId, pair.timestamp]).toEqual(['o-1', o1, p1, BASE + 1_000])
    await pair.ack()
    await sleep(100)
    // Still buffered: a later payment within 5 s could pair with o-1 again.
    expect(await pendingIds(orders, group)).toEqual([o1, o2])
    expect(await pendingIds(payments, group)).toEqual([p1])

    // A far later order moves stream time past every buffered event's time + within + grace.
    const [o3] = (await events.publishBatch(orders, [newEvent('order.placed', { orderId: 'o-3' }, { timestamp: BASE + 100_000 })])) as [string]
    await waitFor(() => results.length === 2, 5_000, 'the unmatched order')
    const unmatched = results[1]!
    expect([unmatched.key, unmatched.left.streamId, unmatched.right]).toEqual(['o-2', o2, undefined])
    await waitFor(async () => (await pendingCount(payments, group)) === 0, 5_000, 'the payment to be acked')
    expect(await pendingIds(orders, group)).toEqual([o2, o3])
    await unmatched.ack()
    await waitFor(async () => (await pendingCount(orders, group)) === 1, 5_000, 'the unmatched order to be acked')
    expect(await pendingIds(orders, group)).toEqual([o3])
  })
})
