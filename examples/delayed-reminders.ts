/**
 * Delayed messages: reminders published now, delivered when due; one is
 * cancelled before its time.
 *
 *   npx tsx examples/delayed-reminders.ts   (Redis at EVENT_REDIS_URL, default redis://127.0.0.1:6379)
 */
import { randomBytes } from 'node:crypto'
import { createEventManager, newEvent } from '../src/index.js'

async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

interface Reminder {
  readonly userId: number
  readonly text: string
  readonly delayMs: number
}

const events = createEventManager()
const topic = `notifications-${randomBytes(4).toString('hex')}`
const started = Date.now()
const delivered: Reminder[] = []

const subscription = events.subscribe(topic, 'reminder-sender', (msg) => {
  const reminder = msg.event.payload as Reminder
  const elapsed = Date.now() - started
  delivered.push(reminder)
  console.log(`  +${String(elapsed).padStart(4)} ms  remind user ${String(reminder.userId)}: ${reminder.text} (${elapsed >= reminder.delayMs ? 'on time' : 'EARLY'})`)
})

const schedule = (userId: number, text: string, delayMs: number): Promise<string> =>
  events.publishWithDelay(topic, newEvent('reminder.send', { userId, text, delayMs }), delayMs)

await schedule(1, 'finish your signup', 300)
await schedule(2, 'your trial ends soon', 600)
const cancelled = await schedule(3, 'we miss you', 900)
console.log(`scheduled 3 reminders on ${topic}; waiting: ${String((await events.stats(topic)).topics[topic]?.delayed ?? 0)}`)
if (await events.cancelDelayed(topic, cancelled)) console.log('cancelled the reminder for user 3')

await until(() => delivered.length === 2)
await until(() => Date.now() - started > 1_200) // past the cancelled one's due time
console.log(`delivered ${String(delivered.length)} reminders; the cancelled one never came`)

await subscription.unsubscribe()
await events.close()
