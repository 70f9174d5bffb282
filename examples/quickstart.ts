/**
 * Quickstart: publish events, consume them with the operators, and watch a
 * failing event being retried and then dead-lettered.
 *
 *   npm run demo
 *
 * Uses EVENT_REDIS_URL (a Redis, or memory:// for the in-memory backend), else
 * Redis on 127.0.0.1:6379 when it answers, else the in-memory backend — and
 * says which.
 */
import { connect } from 'node:net'
import { randomBytes } from 'node:crypto'
import * as t from 'io-ts'
import { firstValueFrom, filter, take, tap, toArray } from 'rxjs'
import { createEventManager, newEvent, type EventManagerOptions } from '../src/index.js'
import { decode, handleEach, matchPattern } from '../operators/index.js'

/** True when something accepts TCP connections at host:port within 300 ms. */
function answers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port })
    const done = (ok: boolean): void => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(300, () => done(false))
    socket.once('connect', () => done(true))
    socket.once('error', () => done(false))
  })
}

/** Where a Redis URL points, without its credentials (they are never printed). */
function address(url: string): string {
  try {
    const { protocol, hostname, port } = new URL(url)
    return `${protocol}//${hostname}${port === '' ? '' : `:${port}`}`
  } catch {
    return 'an unparsable URL' // createEventManager reports what is wrong with it
  }
}

async function chooseBackend(): Promise<EventManagerOptions> {
  const url = process.env['EVENT_REDIS_URL']
  if (url !== undefined && url !== '') {
    if (url.startsWith('memory:')) console.log('backend: in-memory (EVENT_REDIS_URL=memory://)')
    else console.log(`backend: Redis at ${address(url)} (EVENT_REDIS_URL)`)
    return {}
  }
  // The probe address can be changed (tests point it at a closed port).
  const [host = '127.0.0.1', port = '6379'] = (process.env['DEMO_REDIS_PROBE'] ?? '127.0.0.1:6379').split(':')
  if (await answers(host, Number(port))) {
    console.log(`backend: Redis at redis://${host}:${port}`)
    return { redisUrl: `redis://${host}:${port}` }
  }
  console.log('backend: in-memory (no Redis answered; set EVENT_REDIS_URL to use one)')
  return { backend: 'memory' }
}

const UserSignup = t.type({ userId: t.number, email: t.string })

const events = createEventManager({ ...(await chooseBackend()), maxRetries: 2, retryBackoff: '100ms' })
const topic = `demo-user-events-${randomBytes(3).toString('hex')}`
const group = 'welcome-mailer'

await events.publishBatch(topic, [
  newEvent('user.signup', { userId: 1, email: 'ada@example.com' }, { headers: { source: 'web-app' } }),
  newEvent('user.signup', { userId: 2, email: 'grace@example.com' }, { headers: { source: 'mobile' } }),
  newEvent('user.signup', { userId: 3, email: 'fail@example.com' }, { headers: { source: 'web-app' } }),
  newEvent('user.signup', { userId: 'not-a-number' }, { headers: { source: 'web-app' } }),
  newEvent('user.login', { userId: 1 }, { headers: { source: 'web-app' } }),
])
console.log(`published 5 events to ${topic}; the pattern below takes user.signup from web-app only`)

const attempts = new Map<number, number>()
const matched: string[] = []
const outcomes = events
  .topic(topic)
  .consume({ group })
  .pipe(
    matchPattern({ eventName: 'user.signup', headers: { source: 'web-app' } }), // the others are acked and skipped
    tap((msg) => matched.push(msg.streamId)),
    decode(UserSignup), // a payload that does not decode goes to the dead letter queue
    handleEach(
      (msg) => {
        const { userId, email } = msg.event.payload
        if (email.startsWith('fail')) {
          const attempt = (attempts.get(userId) ?? 0) + 1
          attempts.set(userId, attempt)
          console.log(`  user ${userId}: mail server refused (attempt ${attempt})`)
          return Promise.reject(new Error('mail server refused'))
        }
        console.log(`  user ${userId}: welcome mail sent to ${email}`)
        return Promise.resolve()
      },
      { concurrency: 4, retry: { maxRetries: 2, initialDelay: 100, jitter: 0 } },
    ),
  )

const settled = await firstValueFrom(
  outcomes.pipe(
    filter((h) => h.outcome !== 'nacked'),
    take(2),
    toArray(),
  ),
)
for (const h of settled) console.log(`settled event ${h.message.event.name}#${h.message.streamId}: ${h.outcome}`)
console.log(`matchPattern passed ${String(matched.length)} of 5 events on; the other ${String(5 - matched.length)} (user.signup from mobile, user.login) were acked and skipped`)

const letters = await events.deadLetters.list(topic)
for (const letter of letters) console.log(`dead letter ${letter.dlqId}: group=${letter.group} attempts=${letter.attempts} error=${letter.error}`)
await events.deadLetters.purge(topic)
await events.close()
console.log('done')
