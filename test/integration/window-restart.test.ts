/**
 * Crash and restart with window and join state on Redis (issue 12, item 8):
 * the state a Kafka Streams state store would keep (windows emitted and
 * settled, the closed-window watermark, matched join entries) lives in
 * `event:opstate:{topic}:…` hashes, so a restarted consumer neither re-emits
 * a settled window with partial content nor emits a matched order as unpaid.
 *
 * A "process" here is an event manager with a stable consumer name; the crash
 * unsubscribes without settling and closes it, so what its operators held stays
 * pending and the next one re-reads it (a higher delivery count).
 */
import type { Observable } from 'rxjs'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { newEvent, type EventManager, type Message } from '../../src/index.js'
import { joinWithin, windowSliding, type JoinedPair, type Window } from '../../operators/index.js'
import { randomName, redisUrl } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

const BASE = 1_700_000_040_000
const MINUTE = 60_000

let redis: Redis
beforeAll(() => {
  redis = new Redis(redisUrl())
})
afterAll(async () => {
  await redis.quit()
})

async function pendingIds(topic: string, group: string): Promise<string[]> {
  const rows = (await redis.xpending(`event:stream:{${topic}}`, group, '-', '+', 1_000)) as [string, ...unknown[]][]
  return rows.map(([id]) => id)
}

/**
 * A plain consumer: the engine puts the store that keeps operator state on
 * every message it delivers (`operatorStateStore`), so nothing is attached here.
 */
function consume(events: EventManager, topic: string, group: string): Observable<Message> {
  return events.topic(topic).consume({ group, consumer: 'restarting', consumerTimeout: 30_000, drainTimeout: 50, claimInterval: 0 })
}

const show = (w: Window<Message>): string => `[${w.start - BASE},${w.end - BASE}):${w.messages.map((m) => m.event.name).join('')}`

describe('a restart with window state on Redis', () => {
  it('a sliding window is neither re-emitted once settled nor emitted with partial content, and nothing is lost', async () => {
    const topic = randomName('slide-restart')
    const group = randomName('g')
    const first = testEvents()
    // 2 s windows every 1 s: a in [-1000,1000) and [0,2000); b in [0,2000) and [1000,3000); c in [1000,3000) and [2000,4000)
    await first.publishBatch(topic, [newEvent('a', {}, { timestamp: BASE + 500 }), newEvent('b', {}, { timestamp: BASE + 1_500 }), newEvent('c', {}, { timestamp: BASE + 2_500 })])
    const before: Window<Message>[] = []
    const run = consume(first, topic, group).pipe(windowSliding(2_000, 1_000)).subscribe((w) => before.push(w))
    await waitFor(() => before.length === 2, 5_000, 'the two windows c closes')
    expect(before.map(show)).toEqual(['[-1000,1000):a', '[0,2000):ab'])
    await Promise.all(before.map((w) => w.ack()))
    await waitFor(async () => (await pendingIds(topic, group)).length === 2, 5_000, 'a to be acked')
    // crash: b and c are still held by open windows
    run.unsubscribe()
    await first.close()

    const second = testEvents()
    const after: Window<Message>[] = []
    consume(second, topic, group).pipe(windowSliding(2_000, 1_000)).subscribe((w) => after.push(w))
    await second.publish(topic, newEvent('d', {}, { timestamp: BASE + 4_500 }))
    await waitFor(() => after.length >= 2, 5_000, 'the windows d closes')
    // [0,2000) was settled: b's replay does not bring it back with b alone
    expect(after.map(show)).toEqual(['[1000,3000):bc', '[2000,4000):c'])
    await Promise.all(after.map((w) => w.ack()))
    await waitFor(async () => (await pendingIds(topic, group)).length === 1, 5_000, 'b and c to be acked')
    expect(await second.deadLetters.count(topic)).toBe(0)
  })

  it('a left join does not emit an order as unmatched after a restart when it had matched its payment', async () => {
    const orders = randomName('orders-restart')
    const payments = randomName('payments-restart')
    const group = randomName('g')
    const join = (events: EventManager) =>
      consume(events, orders, group).pipe(
        joinWithin(consume(events, payments, group), {
          leftKey: (o) => (o.event.payload as { orderId: string }).orderId,
          rightKey: (p) => (p.event.payload as { orderId: string }).orderId,
          within: 5 * MINUTE,
          type: 'left',
        }),
      )
    const first = testEvents()
    const [o1] = await first.publishBatch(orders, [newEvent('order', { orderId: 'o1' }, { timestamp: BASE })])
    await first.publishBatch(payments, [newEvent('payment', { orderId: 'o1' }, { timestamp: BASE + MINUTE })])
    const before: JoinedPair<Message, Message | undefined>[] = []
    const run = join(first).subscribe((pair) => before.push(pair))
    await waitFor(() => before.length === 1, 5_000, 'the pair')
    await before[0]!.ack()
    // A later order moves the orders' stream time past the payment's retention: the payment leaves the buffer, acked.
    await first.publish(orders, newEvent('order', { orderId: 'o9' }, { timestamp: BASE + 12 * MINUTE }))
    await waitFor(async () => (await pendingIds(payments, group)).length === 0, 5_000, 'the payment to be acked')
    expect(await pendingIds(orders, group)).toContain(o1) // o1 still waits for payments near it
    run.unsubscribe() // crash
    await first.close()

    const second = testEvents()
    const after: JoinedPair<Message, Message | undefined>[] = []
    join(second).subscribe((pair) => after.push(pair))
    // An hour later: every order replayed expires.
    await second.publish(orders, newEvent('order', { orderId: 'o10' }, { timestamp: BASE + 60 * MINUTE }))
    await waitFor(async () => !(await pendingIds(orders, group)).includes(o1!), 5_000, 'o1 to be settled')
    await waitFor(() => after.length >= 1, 5_000, 'o9 to expire unmatched')
    const unmatched = after.map((pair) => `${(pair.left.event.payload as { orderId: string }).orderId}+${pair.right === undefined ? '_' : 'p'}`)
    expect(unmatched).toEqual(['o9+_']) // o9 never had a payment; o1 had one: no spurious o1+_
  })
})
