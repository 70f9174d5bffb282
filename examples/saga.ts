/**
 * A saga: an order is placed; the saga asks inventory to reserve stock and
 * payments to charge the card. When both succeed the order completes; when the
 * payment is declined, the reservation is released (compensation). Every
 * event of one order carries the order event's id as its correlation id,
 * inherited automatically by whatever a handler publishes.
 *
 *   npx tsx examples/saga.ts   (Redis at EVENT_REDIS_URL, default redis://127.0.0.1:6379)
 */
import { randomBytes } from 'node:crypto'
import { createEventManager, newEvent, type Event } from '../src/index.js'

async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

interface Order {
  readonly orderId: string
  readonly sku: string
  readonly amount: number
}

const events = createEventManager()
const suffix = randomBytes(4).toString('hex')
const topics = { orders: `orders-${suffix}`, inventory: `inventory-${suffix}`, payments: `payments-${suffix}`, saga: `order-saga-${suffix}` }
const seenBySaga = new Map<string, Event[]>() // correlation id -> events of that order
const outcomes = new Map<string, string>()

const subscriptions = [
  // The saga starts: two requests, published while handling order.placed, so they inherit its correlation id.
  events.subscribe(topics.orders, 'order-saga', async (msg) => {
    const order = msg.event.payload as Order
    console.log(`order ${order.orderId} placed (correlation id ${msg.event.id})`)
    await events.publish(topics.inventory, newEvent('inventory.reserve', order))
    await events.publish(topics.payments, newEvent('payment.charge', order))
  }),
  events.subscribe(topics.inventory, 'inventory-service', async (msg) => {
    const order = msg.event.payload as Order
    if (msg.event.name === 'inventory.reserve') {
      console.log(`  inventory: reserved ${order.sku} for ${order.orderId}`)
      await events.publish(topics.saga, newEvent('inventory.reserved', order))
    } else {
      console.log(`  inventory: released ${order.sku} for ${order.orderId}`)
      await events.publish(topics.saga, newEvent('inventory.released', order))
    }
  }),
  events.subscribe(topics.payments, 'payment-service', async (msg) => {
    const order = msg.event.payload as Order
    const declined = order.amount > 1_000
    console.log(`  payments: ${declined ? 'declined' : 'charged'} ${String(order.amount)} EUR for ${order.orderId}`)
    await events.publish(topics.saga, newEvent(declined ? 'payment.declined' : 'payment.charged', order))
  }),
  // The saga's state machine, keyed by correlation id.
  events.subscribe(topics.saga, 'order-saga', async (msg) => {
    const order = msg.event.payload as Order
    const cid = msg.event.correlationId ?? msg.event.id
    const history = [...(seenBySaga.get(cid) ?? []), msg.event]
    seenBySaga.set(cid, history)
    const has = (name: string): boolean => history.some((e) => e.name === name)
    switch (msg.event.name) {
      case 'inventory.reserved':
      case 'payment.charged':
      case 'payment.declined':
        if (has('inventory.reserved') && has('payment.charged')) {
          outcomes.set(order.orderId, 'completed')
          console.log(`order ${order.orderId} completed`)
        } else if (has('inventory.reserved') && has('payment.declined')) {
          await events.publish(topics.inventory, newEvent('inventory.release', order)) // compensation
        }
        break
      case 'inventory.released':
        outcomes.set(order.orderId, 'cancelled')
        console.log(`order ${order.orderId} cancelled: payment declined, inventory released`)
        break
    }
  }),
]

const orders = [newEvent('order.placed', { orderId: 'A-1', sku: 'book', amount: 25 }), newEvent('order.placed', { orderId: 'B-2', sku: 'piano', amount: 4_800 })]
for (const order of orders) await events.publish(topics.orders, order)

await until(() => outcomes.size === 2)
for (const order of orders) {
  const chain = seenBySaga.get(order.id) ?? []
  const carried = chain.length > 0 && chain.every((e) => e.correlationId === order.id)
  console.log(`${(order.payload as Order).orderId}: ${outcomes.get((order.payload as Order).orderId) ?? '?'}; ${String(chain.length)} saga events, all with correlation id ${order.id}: ${carried ? 'yes' : 'NO'}`)
}

await Promise.all(subscriptions.map((s) => s.unsubscribe()))
await events.close()
