/**
 * Operating it: statistics (the original spec's `Stats`) and a health check
 * (`Health`) on a known state — 10 events published, 3 handled, 2
 * dead-lettered, 5 still held by a consumer, 1 delayed.
 *
 *   npx tsx examples/stats-and-health.ts   (Redis at EVENT_REDIS_URL, default redis://127.0.0.1:6379)
 *
 * The same from a shell: `npx rx-redis-streams stats <topic>` (or `npm run cli -- stats <topic>`).
 */
import { randomBytes } from 'node:crypto'
import { createEventManager, newEvent, type Message } from '../src/index.js'

async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

const events = createEventManager({ healthTimeout: 1_000 })
const topic = `orders-${randomBytes(4).toString('hex')}`
const group = 'billing'

await events.publishBatch(topic, Array.from({ length: 10 }, (_, i) => newEvent('order.created', { orderId: i })))
await events.publishWithDelay(topic, newEvent('order.reminder', {}), 60 * 60_000)

// A consumer that holds at most 5 messages: handles 3, dead-letters 2, then holds the next 5.
const held: Message[] = []
const subscription = events
  .consume(topic, { group, consumer: 'billing-1', maxPendingMessages: 5, batchSize: 5, drainTimeout: 100 })
  .subscribe((msg) => held.push(msg))
await until(() => held.length === 5)
for (const msg of held.slice(0, 3)) await msg.ack()
for (const msg of held.slice(3, 5)) await msg.deadLetter(new Error('card declined'))
await until(() => held.length === 10)

const stats = await events.stats(topic) // stats() for every topic
for (const [name, t] of Object.entries(stats.topics)) {
  console.log(`Topic ${name}: ${String(t.length)} messages, ${String(t.delayed)} delayed, ${String(t.deadLetters)} dead letters`)
  for (const g of Object.values(t.groups)) {
    const consumers = g.consumers.map((c) => `${c.name} (${String(c.pending)} pending, idle ${String(c.idleMs)} ms)`).join(', ')
    console.log(`  group ${g.name}: ${String(g.pending)} pending, lag ${String(g.lag)}, consumers: ${consumers}`)
  }
}
console.log(`Group ${group}: ${String(stats.consumerGroups[group]?.pending)} pending messages`)

const health = await events.health()
console.log(`health: ${health.ok ? 'ok' : `NOT ok (${health.reasons.join('; ')})`}, Redis PING ${String(health.redis.latencyMs)} ms`)
for (const s of health.subscriptions.filter((x) => x.topic === topic)) {
  console.log(`  subscription ${s.group}/${s.consumer}: ${s.state} (${String(s.held)} held), last read ${String(s.lastReadAgoMs)} ms ago, claimer ${s.claimerAlive ? 'alive' : 'stopped'}`)
}

subscription.unsubscribe()
await events.close()
