import { readFileSync } from 'node:fs'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { newEvent, type EventManager, type Message } from '../../src/index.js'
import { closeTestEventManagers, createTestEventManager, DrainTimeoutError, MemoryBackend, TEST_DEFAULTS, waitForDrained } from '../../src/testing.js'

const open: EventManager[] = []
function manager(...args: Parameters<typeof createTestEventManager>): EventManager {
  const m = createTestEventManager(...args)
  open.push(m)
  return m
}

afterEach(async () => {
  vi.unstubAllEnvs()
  await Promise.all(open.splice(0).map((m) => m.close()))
})

/** The code under test: a handler that could live in an application. */
interface Signup {
  readonly userId: number
  readonly email: string
}
function welcomeMailer(outbox: string[]): (msg: Message<Signup>) => Promise<void> {
  return async (msg) => {
    await Promise.resolve()
    if (msg.event.payload.email.endsWith('@invalid')) throw new Error(`cannot mail ${msg.event.payload.email}`)
    outbox.push(`welcome ${msg.event.payload.email}`)
  }
}

describe('createTestEventManager', () => {
  it('is in memory, ignores the EVENT_* environment, and has fast defaults', () => {
    vi.stubEnv('EVENT_REDIS_URL', 'redis://127.0.0.1:1')
    vi.stubEnv('EVENT_MAX_RETRIES', '9')
    const events = manager()
    expect(events.backend.kind).toBe('memory')
    expect(events.config.maxRetries).toBe(3)
    expect(events.config.retryBackoffMs).toBe(TEST_DEFAULTS.retryBackoff)
    expect(events.config.claimIntervalMs).toBeLessThanOrEqual(100)
    expect(events.config.claimMinIdleTimeMs).toBeLessThanOrEqual(500)
    expect(events.config.delayedQueueCheckIntervalMs).toBeLessThanOrEqual(50)
    expect(events.config.consumerTimeoutMs).toBeLessThanOrEqual(2_000)
  })

  it('lets every default be overridden, the backend too', async () => {
    const backend = new MemoryBackend()
    const events = manager({ backend, maxRetries: 0, retryBackoff: '1s', env: { EVENT_BATCH_SIZE: '7' } })
    expect(events.backend).toBe(backend)
    expect(events.config.maxRetries).toBe(0)
    expect(events.config.retryBackoffMs).toBe(1_000)
    expect(events.config.batchSize).toBe(7)
    await events.publish('t', newEvent('x', 1))
    expect((await backend.topicInfo('t')).length).toBe(1)
  })

  it('gives each manager its own store', async () => {
    const a = manager()
    const b = manager()
    await a.publish('orders', newEvent('order.placed', 1))
    expect((await a.backend.topicInfo('orders')).length).toBe(1)
    expect((await b.backend.topicInfo('orders')).length).toBe(0)
  })
})

describe('closeTestEventManagers: one manager per test', () => {
  it('closes every manager made since the last call, and the next ones work', async () => {
    const first = createTestEventManager()
    const second = createTestEventManager()
    await first.publish('orders', newEvent('order.placed', 1))
    await closeTestEventManagers()
    await expect((async () => first.publish('orders', newEvent('order.placed', 2)))()).rejects.toMatchObject({ code: 'CLOSED' })
    await expect((async () => second.publish('orders', newEvent('order.placed', 2)))()).rejects.toMatchObject({ code: 'CLOSED' })
    // The next test's manager is a fresh one: nothing of the closed ones is left.
    const next = createTestEventManager()
    await next.publish('orders', newEvent('order.placed', 3))
    expect((await next.backend.topicInfo('orders')).length).toBe(1)
    await closeTestEventManagers()
    await closeTestEventManagers() // nothing left: harmless
    expect(next.closed).toBe(true)
  })

  it('stops the subscriptions of the managers it closes', async () => {
    const events = createTestEventManager()
    const seen: unknown[] = []
    const sub = events.subscribe('orders', 'billing', (msg) => void seen.push(msg.event.payload))
    await events.publish('orders', newEvent('order.placed', 1))
    await waitForDrained(events, 'orders', 'billing')
    await closeTestEventManagers()
    await expect(sub.unsubscribe()).resolves.toBeUndefined()
    expect(seen).toEqual([1])
  })

  it("the README's testing example is test/unit/readme-testing.test.ts, verbatim but for the package name", () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
    const section = readme.slice(readme.indexOf('## Testing your own handlers'))
    // The section's example that closes its managers (the section has other examples too).
    const block = [...section.matchAll(/```ts\n([\s\S]*?)\n```/g)].map((m) => m[1]).find((b) => b?.includes('afterEach(closeTestEventManagers)'))
    const test = readFileSync(new URL('./readme-testing.test.ts', import.meta.url), 'utf8')
      .replace(/^(\/\/.*\n)+/, '')
      .replaceAll("'../../src/index.js'", "'rx-redis-streams'")
      .replaceAll("'../../operators/index.js'", "'rx-redis-streams/operators'")
      .replaceAll("'../../src/testing.js'", "'rx-redis-streams/testing'")
    expect(block).toBeDefined()
    expect(test.trimEnd()).toBe(block)
    expect(block).toContain('afterEach(closeTestEventManagers)')
    expect(block?.match(/^it\(/gm)).toHaveLength(2)
  })
})

describe('waitForDrained: a handler tested end to end', () => {
  it('resolves once every event was handled and acked', async () => {
    const events = manager()
    const outbox: string[] = []
    const sub = events.subscribe<Signup>('user-events', 'mailer', welcomeMailer(outbox), { concurrency: 4 })
    await events.publishBatch('user-events', [
      newEvent('user.signup', { userId: 1, email: 'ada@example.com' }),
      newEvent('user.signup', { userId: 2, email: 'grace@example.com' }),
      newEvent('user.signup', { userId: 3, email: 'alan@example.com' }),
    ])
    await waitForDrained(events, 'user-events', 'mailer', { timeoutMs: 2_000 })
    expect(outbox.sort()).toEqual(['welcome ada@example.com', 'welcome alan@example.com', 'welcome grace@example.com'])
    expect(await events.deadLetters.count('user-events')).toBe(0)
    await sub.unsubscribe()
  })

  it('resolves after retries once a failing event is dead-lettered, and the others are handled', async () => {
    const events = manager()
    const outbox: string[] = []
    await events.publishBatch('user-events', [
      newEvent('user.signup', { userId: 1, email: 'ada@example.com' }),
      newEvent('user.signup', { userId: 2, email: 'nobody@invalid' }),
      newEvent('user.signup', { userId: 3, email: 'alan@example.com' }),
    ])
    const sub = events.subscribe<Signup>('user-events', 'mailer', welcomeMailer(outbox))
    // 3 retries with the 10 ms test backoff: well within the timeout (with the 1 s default backoff, 7 s would not do).
    await waitForDrained(events, 'user-events', 'mailer', { timeoutMs: 5_000 })
    expect(outbox).toEqual(['welcome ada@example.com', 'welcome alan@example.com'])
    const [letter, ...others] = await events.deadLetters.list('user-events')
    expect(others).toEqual([])
    expect(letter?.group).toBe('mailer')
    expect(letter?.error).toContain('cannot mail nobody@invalid')
    expect(letter?.event?.payload).toEqual({ userId: 2, email: 'nobody@invalid' })
    await sub.unsubscribe()
  })

  it('waits for a nacked message to be delivered again and acked', async () => {
    const events = manager()
    let attempts = 0
    const sub = events.topic('jobs').consume({ group: 'workers' }).subscribe((msg) => {
      attempts++
      void (msg.deliveryCount < 3 ? msg.nack(new Error('not yet')) : msg.ack())
    })
    await events.publish('jobs', newEvent('job.run', {}))
    await waitForDrained(events, 'jobs', 'workers', { timeoutMs: 2_000 })
    expect(attempts).toBe(3)
    sub.unsubscribe()
  })

  it('waits for delayed events too with includeDelayed', async () => {
    const events = manager()
    const seen: string[] = []
    const sub = events.subscribe('reminders', 'sender', (msg) => void seen.push(msg.event.name))
    await events.publish('reminders', newEvent('now', {}))
    await events.publishWithDelay('reminders', newEvent('later', {}), 150)
    await waitForDrained(events, 'reminders', 'sender', { timeoutMs: 2_000 })
    expect(seen).toEqual(['now'])
    await waitForDrained(events, 'reminders', 'sender', { timeoutMs: 2_000, includeDelayed: true })
    expect(seen).toEqual(['now', 'later'])
    await sub.unsubscribe()
  })

  it('rejects with what is left when messages stay unsettled', async () => {
    const events = manager()
    const held: Message[] = []
    const sub = events.topic('orders').consume({ group: 'billing', maxPendingMessages: 2, drainTimeout: 10 }).subscribe((m) => held.push(m))
    await events.publishBatch('orders', [1, 2, 3, 4, 5].map((n) => newEvent('order.placed', n)))
    const error = await waitForDrained(events, 'orders', 'billing', { timeoutMs: 150 }).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(DrainTimeoutError)
    expect(error).toMatchObject({ code: 'DRAIN_TIMEOUT', topic: 'orders', group: 'billing', state: { groupExists: true, pending: 2, lag: 3 } })
    expect((error as Error).message).toBe(
      'group "billing" of topic "orders" was not drained within 150 ms: 2 pending (delivered, not yet acked or dead-lettered), lag 3 (not yet delivered)',
    )
    expect(held).toHaveLength(2)
    sub.unsubscribe()
  })

  it('rejects with a clear message when nobody consumes the topic as that group', async () => {
    const events = manager()
    await events.publish('orders', newEvent('order.placed', 1))
    await expect(waitForDrained(events, 'orders', 'typo', { timeoutMs: 50 })).rejects.toThrow(
      'group "typo" of topic "orders" was not drained within 50 ms: the group does not exist (is a consumer of this group subscribed?)',
    )
  })

  it('rejects at once when the manager is closed', async () => {
    const events = manager()
    await events.close()
    await expect(waitForDrained(events, 'orders', 'billing', { timeoutMs: 5_000 })).rejects.toMatchObject({ code: 'CLOSED' })
  })
})
