/**
 * Test utilities: an event manager on the in-memory backend with fast
 * defaults, and a wait for a consumer group to have handled everything.
 * Nothing here needs Redis.
 *
 * ## Example
 * ```ts
 * import { newEvent } from 'rx-redis-streams'
 * import { typedHandler } from 'rx-redis-streams/operators'
 * import { closeTestEventManagers, createTestEventManager, waitForDrained } from 'rx-redis-streams/testing'
 *
 * afterEach(closeTestEventManagers)
 * it('mails new users', async () => {
 *   const events = createTestEventManager()
 *   events.subscribe('user-events', 'mailer', typedHandler(UserSignup, sendWelcomeMail))
 *   await events.publish('user-events', newEvent('user.signup', { userId: 1, email: 'ada@example.com' }))
 *   await waitForDrained(events, 'user-events', 'mailer')   // handled and acked (or dead-lettered)
 * })
 * ```
 */
import type { StreamBackend } from './backend/types.js'
import { EventSystemError } from './errors.js'
import { createEventManager, type EventManager, type EventManagerOptions } from './manager.js'

/** The in-memory backend, e.g. to pass one with a controllable clock: `createTestEventManager({ backend: new MemoryBackend({ now }) })`. */
export { MemoryBackend, type MemoryBackendOptions } from './backend/memory/index.js'
export { VirtualClock, advanceVirtualTime, settleVirtualWork, type VirtualClockOptions } from './testing-clock.js'
export { createTestMessage, type TestMessage, type TestMessageOptions, type TestSettlement } from './testing-message.js'

/**
 * The defaults of {@link createTestEventManager}: the in-memory backend, no
 * `EVENT_*` environment, and short retry, claim, timeout and promotion
 * intervals so that tests of retries, redeliveries, claims and delayed events
 * take milliseconds, not minutes.
 */
export const TEST_DEFAULTS = Object.freeze({
  backend: 'memory',
  env: {},
  retryBackoff: 10,
  consumerTimeout: 2_000,
  claimMinIdleTime: 500,
  claimInterval: 100,
  delayedQueueCheckInterval: 50,
}) satisfies EventManagerOptions

/** The managers {@link createTestEventManager} made that {@link closeTestEventManagers} has not closed yet. */
const openTestManagers = new Set<EventManager>()

/**
 * An event manager for tests: in memory (no Redis, nothing shared between two
 * managers), independent of the process's `EVENT_*` variables, with fast
 * defaults ({@link TEST_DEFAULTS}: 10 ms retry backoff, 2 s consumer timeout,
 * claims of entries idle 500 ms every 100 ms, delayed events promoted within
 * 50 ms). Every option can be overridden, the backend too (a `MemoryBackend`
 * with a fake clock, or `'redis'` with a `redisUrl`).
 *
 * Make one per test (it is cheap) and close them all with
 * `afterEach(closeTestEventManagers)`: a closed manager stays closed (it
 * rejects with `ClosedError`), so a manager shared by several tests must not
 * be closed between them.
 *
 * ## Example
 * ```ts
 * import { afterEach, it } from 'vitest'
 * import { closeTestEventManagers, createTestEventManager } from 'rx-redis-streams/testing'
 *
 * afterEach(closeTestEventManagers)
 * it('…', async () => {
 *   const events = createTestEventManager({ maxRetries: 1 })
 *   // subscribe, publish, waitForDrained(events, topic, group), expect …
 * })
 * ```
 */
export function createTestEventManager(options: EventManagerOptions = {}): EventManager {
  const manager = createEventManager({ ...TEST_DEFAULTS, ...options })
  openTestManagers.add(manager)
  return manager
}

/**
 * Closes every manager made by {@link createTestEventManager} since the last
 * call (their subscriptions stop; closing one twice is harmless). Meant for
 * `afterEach`, so each test starts with managers of its own.
 *
 * ## Example
 * ```ts
 * import { afterEach } from 'vitest'
 * import { closeTestEventManagers } from 'rx-redis-streams/testing'
 * afterEach(closeTestEventManagers)
 * ```
 */
export async function closeTestEventManagers(): Promise<void> {
  const managers = [...openTestManagers]
  openTestManagers.clear()
  await Promise.all(managers.map((m) => m.close()))
}

/** Options of {@link waitForDrained}. */
export interface WaitForDrainedOptions {
  /** Give up (reject with a {@link DrainTimeoutError}) after this many ms. Default 5,000. */
  readonly timeoutMs?: number
  /** How often to look, in ms. Default 10. */
  readonly intervalMs?: number
  /** Also wait until no delayed event of the topic is waiting for its due time. Default false. */
  readonly includeDelayed?: boolean
}

/** What {@link waitForDrained} saw last. */
export interface DrainState {
  /** False when the group does not exist (yet): nobody consumed the topic as this group. */
  readonly groupExists: boolean
  /** Entries delivered to the group and not yet acked or dead-lettered (the PEL). */
  readonly pending: number
  /** Entries of the topic not yet delivered to the group; null when the store cannot tell. */
  readonly lag: number | null
  /** Delayed events waiting (only counted with `includeDelayed`). */
  readonly scheduled: number
}

/** {@link waitForDrained} gave up: the group still had work after the timeout. */
export class DrainTimeoutError extends EventSystemError {
  constructor(
    readonly topic: string,
    readonly group: string,
    readonly timeoutMs: number,
    readonly state: DrainState,
  ) {
    super('DRAIN_TIMEOUT', `group ${JSON.stringify(group)} of topic ${JSON.stringify(topic)} was not drained within ${timeoutMs} ms: ${describeState(state)}`)
  }
}

function describeState(state: DrainState): string {
  if (!state.groupExists) return 'the group does not exist (is a consumer of this group subscribed?)'
  const parts = [`${state.pending} pending (delivered, not yet acked or dead-lettered)`, `lag ${state.lag === null ? 'unknown' : state.lag} (not yet delivered)`]
  if (state.scheduled > 0) parts.push(`${state.scheduled} delayed events waiting`)
  return parts.join(', ')
}

/** Compares two stream ids (`ms-seq`) numerically. */
function compareStreamIds(a: string, b: string): number {
  const [aMs = 0, aSeq = 0] = a.split('-').map(Number)
  const [bMs = 0, bSeq = 0] = b.split('-').map(Number)
  return aMs - bMs || aSeq - bSeq
}

async function drainState(backend: StreamBackend, topic: string, group: string, includeDelayed: boolean): Promise<{ drained: boolean; state: DrainState }> {
  const [groups, scheduled] = await Promise.all([backend.groups(topic), includeDelayed ? backend.countScheduled(topic) : Promise.resolve(0)])
  const info = groups.find((g) => g.name === group)
  if (info === undefined) return { drained: false, state: { groupExists: false, pending: 0, lag: null, scheduled } }
  let lag = info.lag
  if (lag === null) {
    // Redis cannot always count the lag (after deletions); then compare the last delivered id with the last entry.
    const { lastId } = await backend.topicInfo(topic)
    lag = lastId === null || compareStreamIds(info.lastDeliveredId, lastId) >= 0 ? 0 : null
  }
  const state: DrainState = { groupExists: true, pending: info.pending, lag, scheduled }
  return { drained: info.pending === 0 && lag === 0 && scheduled === 0, state }
}

/**
 * Resolves once consumer group `group` of `topic` has handled everything
 * published so far: it exists, nothing is pending (every delivered message
 * was acked or dead-lettered; a nacked message waiting for its redelivery is
 * still pending) and nothing is left to deliver (zero lag). Reads
 * `manager.backend.groups(topic)`, so it works on any backend. Rejects with a
 * {@link DrainTimeoutError} that says what was left after `timeoutMs`.
 *
 * @example
 * ```ts
 * import { createTestEventManager, waitForDrained } from 'rx-redis-streams/testing'
 * const events = createTestEventManager()
 * const seen: unknown[] = []
 * const sub = events.subscribe('orders', 'billing', (msg) => void seen.push(msg.event.payload))
 * await events.publish('orders', newEvent('order.placed', { orderId: 7 }))
 * await waitForDrained(events, 'orders', 'billing', { timeoutMs: 1_000 })
 * expect(seen).toEqual([{ orderId: 7 }])
 * await sub.unsubscribe()
 * ```
 * @throws {DrainTimeoutError} when the group still has work after `timeoutMs`
 */
export async function waitForDrained(
  manager: { readonly backend: StreamBackend },
  topic: string,
  group: string,
  options: WaitForDrainedOptions = {},
): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 5_000
  const intervalMs = options.intervalMs ?? 10
  const includeDelayed = options.includeDelayed ?? false
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const { drained, state } = await drainState(manager.backend, topic, group, includeDelayed)
    if (drained) return
    if (Date.now() >= deadline) throw new DrainTimeoutError(topic, group, timeoutMs, state)
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(intervalMs, deadline - Date.now()))))
  }
}
