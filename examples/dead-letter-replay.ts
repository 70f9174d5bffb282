/**
 * Dead letters: a handler that keeps failing is retried with backoff, then the
 * event goes to the topic's dead letter queue. Once the cause is fixed, the
 * dead letter is replayed — for the group that failed it only.
 *
 *   npx tsx examples/dead-letter-replay.ts   (Redis at EVENT_REDIS_URL, default redis://127.0.0.1:6379)
 */
import { randomBytes } from 'node:crypto'
import { createEventManager, newEvent } from '../src/index.js'

async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

interface Charge {
  readonly orderId: string
  readonly amount: number
}

const events = createEventManager({ maxRetries: 2, retryBackoff: '50ms' })
const topic = `payments-${randomBytes(4).toString('hex')}`
let gatewayUp = false
const charged: string[] = []

const subscription = events.subscribe(topic, 'payments', async (msg) => {
  const { orderId, amount } = msg.event.payload as Charge
  await new Promise((resolve) => setTimeout(resolve, 5)) // the call to the payment gateway
  if (!gatewayUp) {
    console.log(`  order ${orderId}: payment gateway unavailable`)
    throw new Error('payment gateway unavailable')
  }
  charged.push(orderId)
  console.log(`  order ${orderId}: charged ${String(amount)} EUR`)
})

await events.publish(topic, newEvent('payment.charge', { orderId: 'A-1', amount: 42 }))
console.log(`published payment.charge for order A-1 to ${topic}`)

await until(async () => (await events.deadLetters.count(topic)) === 1)
const [letter] = await events.deadLetters.list(topic)
if (letter === undefined) throw new Error('no dead letter')
console.log(`dead-lettered ${letter.event?.name ?? '?'} of group ${letter.group}: ${letter.error}`)

gatewayUp = true
console.log('the gateway is back: replaying the dead letter')
await events.deadLetters.replay(topic, letter.dlqId)
await until(() => charged.length === 1)
console.log(`dead letters left: ${String(await events.deadLetters.count(topic))}`)

await subscription.unsubscribe()
await events.close()
