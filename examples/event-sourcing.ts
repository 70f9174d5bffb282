/**
 * Event sourcing: the events of an account are the source of truth; its state
 * is rebuilt by replaying them, in order, from the beginning of the topic. A
 * new consumer group starts from the topic's retained history, so each
 * rebuild is just a fresh group folding the events.
 *
 *   npx tsx examples/event-sourcing.ts   (Redis at EVENT_REDIS_URL, default redis://127.0.0.1:6379)
 */
import { randomBytes } from 'node:crypto'
import { concatMap, firstValueFrom, reduce, take } from 'rxjs'
import { createEventManager, newEvent, type Event } from '../src/index.js'

interface Account {
  readonly owner: string
  readonly balance: number
  readonly version: number
}

type AccountEvent =
  | { readonly type: 'account.opened'; readonly owner: string }
  | { readonly type: 'money.deposited'; readonly amount: number }
  | { readonly type: 'money.withdrawn'; readonly amount: number }

/** The state after one more event: a pure function, so a replay always gives the same state. */
function apply(state: Account, event: Event): Account {
  const e = { type: event.name, ...(event.payload as object) } as AccountEvent
  switch (e.type) {
    case 'account.opened':
      return { owner: e.owner, balance: 0, version: state.version + 1 }
    case 'money.deposited':
      return { ...state, balance: state.balance + e.amount, version: state.version + 1 }
    case 'money.withdrawn':
      return { ...state, balance: state.balance - e.amount, version: state.version + 1 }
  }
}

const events = createEventManager()
const topic = `account-${randomBytes(4).toString('hex')}`
const empty: Account = { owner: '', balance: 0, version: 0 }

/** Replays every event of the topic through `apply` with a new consumer group. */
async function rebuild(): Promise<Account> {
  const length = (await events.stats(topic)).topics[topic]?.length ?? 0
  return firstValueFrom(
    events
      .consume(topic, { group: `rebuild-${randomBytes(4).toString('hex')}` })
      .pipe(
        take(length),
        concatMap(async (msg) => {
          await msg.ack()
          return msg.event
        }),
        reduce(apply, empty),
      ),
  )
}

await events.publish(topic, newEvent('account.opened', { owner: 'ada' }))
await events.publish(topic, newEvent('money.deposited', { amount: 100 }))
await events.publish(topic, newEvent('money.withdrawn', { amount: 30 }))
await events.publish(topic, newEvent('money.deposited', { amount: 0.5 }))
console.log(`appended 4 events to ${topic}`)

const first = await rebuild()
console.log(`rebuilt from ${String(first.version)} events: ${first.owner} has ${String(first.balance)}`)

await events.publish(topic, newEvent('money.withdrawn', { amount: 20.5 }))
const second = await rebuild()
console.log(`rebuilt from ${String(second.version)} events: ${second.owner} has ${String(second.balance)}`)

await events.close()
