/**
 * Delayed messages: reminders published now, delivered when due; one is
 * cancelled before its time. A web process schedules them (it runs no
 * promoter), a worker process consumes the topic (its consumer promotes what
 * is due): two managers here, as in two processes. The worker starts only
 * after the cancellation, so what this prints does not depend on how fast the
 * machine is.
 *
 *   npx tsx examples/delayed-reminders.ts   (Redis at EVENT_REDIS_URL, default redis://127.0.0.1:6379)
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

interface Reminder {
  readonly userId: number
  readonly text: string
  readonly delayMs: number
}

interface Scheduled extends Reminder {
  /** When it is due (epoch ms): it must not arrive earlier. */
  readonly dueAt: number
}

const web = createEventManager({ delayedQueueEnabled: false }) // schedules only
const topic = `notifications-${randomBytes(4).toString('hex')}`
const started = Date.now()

const schedule = async (userId: number, text: string, delayMs: number): Promise<string> => {
  const dueAt = Date.now() + delayMs
  return web.publishAt(topic, newEvent('reminder.send', { userId, text, delayMs, dueAt } satisfies Scheduled), dueAt)
}

await schedule(1, 'finish your signup', 300)
await schedule(2, 'your trial ends soon', 600)
const cancelled = await schedule(3, 'we miss you', 900)
console.log(`scheduled 3 reminders on ${topic}; waiting: ${String((await web.stats(topic)).topics[topic]?.delayed ?? 0)}`)
if (await web.cancelDelayed(topic, cancelled)) console.log('cancelled the reminder for user 3')

const worker = createEventManager() // its consumer promotes due events
const delivered: Scheduled[] = []
const subscription = worker.subscribe(topic, 'reminder-sender', (msg) => {
  const reminder = msg.event.payload as Scheduled
  const now = Date.now()
  delivered.push(reminder)
  console.log(`  +${String(now - started).padStart(4)} ms  remind user ${String(reminder.userId)}: ${reminder.text} (${now >= reminder.dueAt ? 'on time' : 'EARLY'})`)
})

await until(() => delivered.length === 2)
await until(() => Date.now() - started > 1_200) // past the cancelled one's due time
await until(async () => (await worker.stats(topic)).topics[topic]?.delayed === 0)
console.log(`delivered ${String(delivered.length)} reminders; the cancelled one never came`)

await subscription.unsubscribe()
await Promise.all([worker.close(), web.close()])
