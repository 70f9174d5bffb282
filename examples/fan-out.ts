/**
 * Fan-out: several consumer groups on one topic. Every group receives every
 * event; within a group, the events are shared among its consumers.
 *
 *   npx tsx examples/fan-out.ts        (Redis at EVENT_REDIS_URL, default redis://127.0.0.1:6379)
 */
import { randomBytes } from 'node:crypto'
import { createEventManager, newEvent } from '../src/index.js'

/** Polls until `condition` holds; fails after `timeoutMs`. */
async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

const events = createEventManager() // EVENT_* environment
const topic = `user-events-${randomBytes(4).toString('hex')}`
const groups = ['analytics', 'notifications', 'audit'] as const
const received = new Map<string, string[]>(groups.map((group) => [group, []]))

const subscriptions = groups.map((group) =>
  events.subscribe(topic, group, (msg) => {
    received.get(group)?.push(msg.event.name)
    console.log(`  ${group.padEnd(13)} got ${msg.event.name} ${JSON.stringify(msg.event.payload)}`)
  }),
)

await events.publishBatch(topic, [
  newEvent('user.signup', { userId: 1 }),
  newEvent('user.login', { userId: 1 }),
  newEvent('user.logout', { userId: 1 }),
])
console.log(`published 3 events to ${topic}`)

await until(() => groups.every((group) => received.get(group)?.length === 3))
for (const group of groups) console.log(`${group}: ${received.get(group)?.join(', ') ?? ''}`)
console.log('every group received every event')

await Promise.all(subscriptions.map((s) => s.unsubscribe()))
await events.close()
