/**
 * Typed handlers with io-ts: payloads are decoded before the handler runs; a
 * payload that does not decode goes to the dead letter queue at once, with
 * the decoder's report, and is never retried.
 *
 *   npx tsx examples/typed-handlers.ts   (Redis at EVENT_REDIS_URL, default redis://127.0.0.1:6379)
 */
import { randomBytes } from 'node:crypto'
import * as t from 'io-ts'
import { createEventManager, newEvent } from '../src/index.js'
import { decode, handleEach, typedHandler } from '../operators/index.js'

async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

const UserSignup = t.type({
  userId: t.number,
  email: t.string,
  plan: t.keyof({ free: null, premium: null }),
})
type UserSignup = t.TypeOf<typeof UserSignup>

const events = createEventManager()
const topic = `user-events-${randomBytes(4).toString('hex')}`
let mailed = 0
let counted = 0

// The original spec's typed handler: the payload arrives decoded and typed.
const mailer = events.subscribe(
  topic,
  'welcome-mailer',
  typedHandler(UserSignup, (signup: UserSignup) => {
    mailed++
    console.log(`  welcome-mailer: user ${String(signup.userId)} signed up with ${signup.email} (${signup.plan})`)
  }),
)

// The same with operators: decode() dead-letters what does not decode.
const analytics = events
  .topic(topic)
  .consume({ group: 'analytics' })
  .pipe(
    decode(UserSignup),
    handleEach((msg) => {
      counted++
      console.log(`  analytics: counted a ${msg.event.payload.plan} signup`)
    }),
  )
  .subscribe()

await events.publishBatch(topic, [
  newEvent('user.signup', { userId: 1, email: 'ada@example.com', plan: 'premium' }),
  newEvent('user.signup', { userId: 2, email: 'grace@example.com', plan: 'free' }),
  newEvent('user.signup', { userId: 'three', email: 3, plan: 'gold' }),
])
console.log(`published 3 signups (one malformed) to ${topic}`)

await until(async () => mailed === 2 && counted === 2 && (await events.deadLetters.count(topic)) === 2)
for (const letter of await events.deadLetters.list(topic)) {
  console.log(`rejected for ${letter.group} without retry: ${letter.error.slice(0, 120)}`)
}
console.log(`handled 2 valid signups in each group; dead letters: ${String(await events.deadLetters.count(topic))}`)

await mailer.unsubscribe()
analytics.unsubscribe()
await events.close()
