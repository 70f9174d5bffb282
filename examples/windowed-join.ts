/**
 * Event-time windows and a stream-stream join, end to end on Redis:
 *
 * - orders joined with their payments when the payment comes within 5 minutes
 *   of the order (`joinWithin`, type 'left': an order without one is unpaid);
 * - per-minute order counts per user (`windowTumbling` + `reduceWindow`).
 *
 * Every event carries an explicit event time (three minutes of orders on
 * 2024-01-15 from 12:00 UTC), so the output does not depend on when it runs:
 *
 *   npx tsx examples/windowed-join.ts
 *
 * Uses Redis at EVENT_REDIS_URL (default redis://127.0.0.1:6379), on topics
 * with a random suffix. The windows and join results are settled (acked),
 * which acks every order and payment they hold.
 */
import { randomBytes } from 'node:crypto'
import { lastValueFrom, mergeMap, take, toArray, type Observable } from 'rxjs'
import { createEventManager, newEvent, type Message } from '../src/index.js'
import { joinWithin, reduceWindow, windowTumbling } from '../operators/index.js'

interface Order {
  readonly orderId: string
  readonly userId: string
  readonly amount: number
}

interface Payment {
  readonly paymentId: string
  readonly orderId: string
}

const redisUrl = process.env['EVENT_REDIS_URL'] ?? 'redis://127.0.0.1:6379'
const events = createEventManager({ redisUrl })
const suffix = randomBytes(4).toString('hex')
const ordersTopic = `example-orders-${suffix}`
const paymentsTopic = `example-payments-${suffix}`

/** Event time: 2024-01-15 12:mm:ss UTC. */
const at = (minute: number, second: number): number => Date.UTC(2024, 0, 15, 12, minute, second)
/** 12:00 for an event time (UTC). */
const clock = (time: number): string => new Date(time).toISOString().slice(11, 16)

const orders: [Order, number][] = [
  [{ orderId: 'o-1', userId: 'u-1', amount: 30 }, at(0, 10)],
  [{ orderId: 'o-2', userId: 'u-2', amount: 12 }, at(0, 25)],
  [{ orderId: 'o-3', userId: 'u-1', amount: 7 }, at(0, 40)],
  [{ orderId: 'o-4', userId: 'u-3', amount: 55 }, at(1, 5)],
  [{ orderId: 'o-5', userId: 'u-2', amount: 18 }, at(1, 30)],
  [{ orderId: 'o-6', userId: 'u-1', amount: 9 }, at(2, 15)],
  [{ orderId: 'o-7', userId: 'u-3', amount: 21 }, at(2, 50)],
]
const payments: [Payment, number][] = [
  [{ paymentId: 'p-1', orderId: 'o-1' }, at(1, 0)],
  [{ paymentId: 'p-4', orderId: 'o-4' }, at(2, 0)],
  [{ paymentId: 'p-2', orderId: 'o-2' }, at(3, 0)],
  [{ paymentId: 'p-7', orderId: 'o-7' }, at(4, 0)],
  [{ paymentId: 'p-5', orderId: 'o-5' }, at(7, 45)], // more than 5 minutes after o-5: too late
]

await events.publishBatch(ordersTopic, orders.map(([order, timestamp]) => newEvent('order.placed', order, { timestamp })))
await events.publishBatch(paymentsTopic, payments.map(([payment, timestamp]) => newEvent('payment.received', payment, { timestamp })))
console.log(`published ${orders.length} orders to ${ordersTopic} and ${payments.length} payments to ${paymentsTopic}`)

/**
 * One consumer of a group. The sources complete after the published events
 * (`take`), so the last windows and join buffers flush at once; a long-running
 * service would rely on `idleTimeout` instead.
 */
function consume<P>(topic: string, group: string, count: number): Observable<Message<P>> {
  return (events.topic(topic).consume({ group, drainTimeout: 2_000 }) as Observable<Message<P>>).pipe(take(count))
}

// Orders joined with payments within 5 minutes of each other (by order id).
// The two topics are read independently, so one may run ahead of the other in
// event time: each side has its own stream time, and `grace` (default: `within`)
// bounds how far they may drift apart before an event counts as late.
const joined = consume<Order>(ordersTopic, 'payment-matcher', orders.length).pipe(
  joinWithin(consume<Payment>(paymentsTopic, 'payment-matcher', payments.length), {
    leftKey: (order) => order.event.payload.orderId,
    rightKey: (payment) => payment.event.payload.orderId,
    within: 5 * 60_000,
    type: 'left',
    idleTimeout: 1_000,
  }),
  mergeMap(async (pair) => {
    await pair.ack() // acks the order and the payment (once they left the join buffer)
    const order = pair.left.event.payload
    const line = pair.right === undefined ? `unpaid order ${order.orderId}` : `joined order ${order.orderId} with payment ${pair.right.event.payload.paymentId}`
    return { sort: order.orderId, line, messages: pair.right === undefined ? [pair.left] : [pair.left, pair.right] }
  }),
  toArray(),
)

// Orders per user and minute: one tumbling window per user and minute.
const counted = consume<Order>(ordersTopic, 'order-counts', orders.length).pipe(
  windowTumbling(60_000, { key: (order) => order.event.payload.userId, idleTimeout: 1_000 }),
  reduceWindow((count: number) => count + 1, 0),
  mergeMap(async (result) => {
    await result.ack() // acks every order of the window
    const line = `user ${result.key} minute ${clock(result.start)} → ${result.value} ${result.value === 1 ? 'order' : 'orders'}`
    return { sort: `${result.key} ${result.start}`, line, messages: result.window.messages }
  }),
  toArray(),
)

const [joins, counts] = await Promise.all([lastValueFrom(joined), lastValueFrom(counted)])
const byKey = (a: { sort: string }, b: { sort: string }): number => (a.sort < b.sort ? -1 : a.sort > b.sort ? 1 : 0)
for (const { line } of [...joins].sort(byKey)) console.log(line)
for (const { line } of [...counts].sort(byKey)) console.log(line)

// Every order and payment was acked through the result holding it (the late
// payment p-5 found no order: the join acked it on its own, unmatched: 'ack').
const ackedVia = (results: { messages: readonly Message[] }[], topic: string): number =>
  new Set(results.flatMap((r) => r.messages.filter((m) => m.topic === topic && m.outcome === 'acked').map((m) => m.streamId))).size
console.log(`acked through join results: ${ackedVia(joins, ordersTopic)} orders, ${ackedVia(joins, paymentsTopic)} payments`)
console.log(`acked through count windows: ${ackedVia(counts, ordersTopic)} orders`)

await events.close()
console.log('done')
