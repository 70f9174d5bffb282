/**
 * CQRS: commands change the write model, which publishes what happened as
 * events; independent projections (one consumer group each) keep read models
 * that queries use. Reads never touch the write model.
 *
 *   npx tsx examples/cqrs-projections.ts   (Redis at EVENT_REDIS_URL, default redis://127.0.0.1:6379)
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

interface User {
  readonly userId: string
  readonly name: string
  readonly plan: 'free' | 'premium'
}

const events = createEventManager()
const suffix = randomBytes(4).toString('hex')
const commandsTopic = `user-commands-${suffix}`
const eventsTopic = `user-events-${suffix}`

// Write side: validates commands against the write model, publishes events.
const writeModel = new Map<string, User>()
let published = 0
const commandHandler = events.subscribe(commandsTopic, 'user-service', async (msg) => {
  const command = msg.event.payload as Partial<User> & { userId: string }
  if (msg.event.name === 'user.register') {
    const user: User = { userId: command.userId, name: command.name ?? '?', plan: 'free' }
    writeModel.set(user.userId, user)
    await events.publish(eventsTopic, newEvent('user.registered', user))
    published++
  } else if (msg.event.name === 'user.change-plan') {
    const current = writeModel.get(command.userId)
    if (current === undefined) {
      console.log(`  command rejected: user ${command.userId} does not exist`)
      return
    }
    const updated: User = { ...current, plan: command.plan ?? current.plan }
    writeModel.set(updated.userId, updated)
    await events.publish(eventsTopic, newEvent('user.plan-changed', updated))
    published++
  }
})

// Read side: two projections, each its own consumer group, each with its own read model.
const usersById = new Map<string, User>()
const planCounts = new Map<string, number>()
let projectedById = 0
let projectedPlans = 0
const byIdProjection = events.subscribe(eventsTopic, 'projection-users-by-id', (msg) => {
  const user = msg.event.payload as User
  usersById.set(user.userId, user)
  projectedById++
})
const planProjection = events.subscribe(eventsTopic, 'projection-plan-counts', (msg) => {
  const user = msg.event.payload as User
  if (msg.event.name === 'user.plan-changed') planCounts.set('free', (planCounts.get('free') ?? 0) - 1)
  planCounts.set(user.plan, (planCounts.get(user.plan) ?? 0) + 1)
  projectedPlans++
})

// Commands are published in order on one topic, so they are handled in order.
await events.publishBatch(commandsTopic, [
  newEvent('user.register', { userId: 'u1', name: 'Ada' }),
  newEvent('user.register', { userId: 'u2', name: 'Grace' }),
  newEvent('user.register', { userId: 'u3', name: 'Linus' }),
  newEvent('user.change-plan', { userId: 'u2', plan: 'premium' }),
  newEvent('user.change-plan', { userId: 'u9', plan: 'premium' }),
])
console.log(`sent 5 commands to ${commandsTopic}`)

await until(async () => {
  const pending = (await events.stats(commandsTopic)).topics[commandsTopic]?.groups['user-service']
  return pending?.pending === 0 && pending.lag === 0 && projectedById === published && projectedPlans === published
})
console.log(`write model: ${String(writeModel.size)} users; ${String(published)} events published to ${eventsTopic}`)
console.log(`query users-by-id u2: ${JSON.stringify(usersById.get('u2'))}`)
console.log(`query plan-counts: ${JSON.stringify(Object.fromEntries([...planCounts].sort()))}`)

await Promise.all([commandHandler, byIdProjection, planProjection].map((s) => s.unsubscribe()))
await events.close()
