/**
 * Pattern matching: handle only the events whose name (exact or glob) and
 * headers match; the others are acked for that group and skipped.
 *
 *   npx tsx examples/pattern-matching.ts   (Redis at EVENT_REDIS_URL, default redis://127.0.0.1:6379)
 */
import { randomBytes } from 'node:crypto'
import { createEventManager, newEvent } from '../src/index.js'
import { handleEach, matchPattern } from '../operators/index.js'

async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

const events = createEventManager()
const topic = `user-events-${randomBytes(4).toString('hex')}`
const webSignups: string[] = []
const userEvents: string[] = []

// The original spec's EventPattern: exact name and header values.
const signups = events.subscribe(
  topic,
  'web-signups',
  (msg) => {
    webSignups.push(msg.event.name)
    console.log(`  web-signups: ${msg.event.name} from ${msg.event.headers['source'] ?? '?'}`)
  },
  { pattern: { eventName: 'user.signup', headers: { source: 'web-app' } } },
)

// A glob with the operator: `*` is any run of characters except `.`.
const users = events
  .topic(topic)
  .consume({ group: 'user-activity' })
  .pipe(
    matchPattern({ eventName: 'user.*' }),
    handleEach((msg) => {
      userEvents.push(msg.event.name)
      console.log(`  user-activity: ${msg.event.name}`)
    }),
  )
  .subscribe()

await events.publishBatch(topic, [
  newEvent('user.signup', { userId: 1 }, { headers: { source: 'web-app' } }),
  newEvent('user.signup', { userId: 2 }, { headers: { source: 'mobile' } }),
  newEvent('user.login', { userId: 1 }, { headers: { source: 'web-app' } }),
  newEvent('order.created', { orderId: 9 }, { headers: { source: 'web-app' } }),
])
console.log(`published 4 events to ${topic}`)

// Everything is settled (matched ones handled, the rest acked) once no group has anything pending or unread.
await until(async () => {
  const stats = await events.stats(topic)
  const groups = Object.values(stats.topics[topic]?.groups ?? {})
  return groups.length === 2 && groups.every((g) => g.pending === 0 && g.lag === 0)
})
console.log(`web-signups handled ${String(webSignups.length)} of 4 events: ${webSignups.join(', ')}`)
console.log(`user-activity handled ${String(userEvents.length)} of 4 events: ${userEvents.join(', ')}`)

await signups.unsubscribe()
users.unsubscribe()
await events.close()
