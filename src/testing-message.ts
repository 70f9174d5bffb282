import { messageWithdrawn, releaseMessage, type Message, type RetryDefaults } from './consumer/message.js'
import type { Event } from './event.js'
import type { NackOptions, Outcome } from './settle.js'

/** Options of {@link createTestMessage}: every field has a default. */
export interface TestMessageOptions {
  /** Event name. Default `'test.event'`. */
  readonly name?: string
  readonly headers?: Readonly<Record<string, string>>
  /** Event id. Default `evt-<n>`. */
  readonly id?: string
  /** Event time, epoch ms. Default 0. */
  readonly timestamp?: number
  readonly correlationId?: string
  /** Stream entry id. Default `<timestamp>-<n>`. */
  readonly streamId?: string
  /** Default `'test-topic'`. */
  readonly topic?: string
  /** Default `'test-group'`. */
  readonly group?: string
  /** Default `'test-consumer'`. */
  readonly consumer?: string
  /** Default 1. */
  readonly deliveryCount?: number
  /** Default 4 (`maxRetries` 3 + 1). */
  readonly maxDeliveries?: number
  /** Default `{ maxRetries: 3, initialDelay: 1000 }`. */
  readonly retry?: RetryDefaults
}

/** One settlement call made on a test message. */
export interface TestSettlement {
  readonly kind: 'ack' | 'nack' | 'deadLetter'
  /** The error of a nack, the reason of a dead letter. */
  readonly reason?: unknown
  readonly options?: NackOptions
}

/**
 * A {@link Message} made by {@link createTestMessage}: settles in memory and
 * records what was done to it.
 */
export interface TestMessage<P = unknown> extends Message<P> {
  /** Every settlement call, in order (the first one decides the outcome). */
  readonly settlements: readonly TestSettlement[]
  /** How many handler attempts started (`begin()` calls that returned true). */
  readonly attempts: number
  /** The `holdUntil` calls, in order. */
  readonly holds: readonly number[]
  /** True once given back (`releaseUnhandled`): `begin()` returns false, `ack()` resolves `'withdrawn'`. */
  readonly withdrawn: boolean
  /** Aborts the current attempt's signal, as a consumer timeout or the drain deadline would. */
  abort(reason?: unknown): void
}

interface State {
  outcome: Outcome | undefined
  withdrawn: boolean
  attempts: number
  controller: AbortController
  readonly settlements: TestSettlement[]
  readonly holds: number[]
}

let sequence = 0

class TestMessageImpl<P> implements TestMessage<P> {
  readonly event: Event<P>
  readonly streamId: string
  readonly topic: string
  readonly group: string
  readonly consumer: string
  readonly deliveryCount: number
  readonly maxDeliveries: number
  readonly retry: RetryDefaults
  readonly #state: State

  constructor(event: Event<P>, options: TestMessageOptions, state: State, n: number) {
    this.event = event
    this.streamId = options.streamId ?? `${event.timestamp}-${n}`
    this.topic = options.topic ?? 'test-topic'
    this.group = options.group ?? 'test-group'
    this.consumer = options.consumer ?? 'test-consumer'
    this.deliveryCount = options.deliveryCount ?? 1
    this.maxDeliveries = options.maxDeliveries ?? 4
    this.retry = options.retry ?? { maxRetries: 3, initialDelay: 1_000 }
    this.#state = state
  }

  get outcome(): Outcome | undefined {
    return this.#state.outcome
  }
  get settlements(): readonly TestSettlement[] {
    return this.#state.settlements
  }
  get attempts(): number {
    return this.#state.attempts
  }
  get holds(): readonly number[] {
    return this.#state.holds
  }
  get withdrawn(): boolean {
    return this.#state.withdrawn
  }
  get signal(): AbortSignal {
    return this.#state.controller.signal
  }

  begin(): boolean {
    const state = this.#state
    if (state.outcome !== undefined || state.withdrawn) return false
    state.attempts++
    if (state.controller.signal.aborted) state.controller = new AbortController()
    return true
  }

  holdUntil(untilMs: number): void {
    this.#state.holds.push(untilMs)
  }

  abort(reason?: unknown): void {
    this.#state.controller.abort(reason)
  }

  get [messageWithdrawn](): boolean {
    return this.#state.withdrawn && this.#state.outcome === undefined
  }

  [releaseMessage](): void {
    if (this.#state.outcome === undefined) this.#state.withdrawn = true
  }

  withPayload<A>(payload: A): Message<A> {
    const e = this.event
    const event: Event<A> = { ...e, payload }
    const options: TestMessageOptions = {
      streamId: this.streamId,
      topic: this.topic,
      group: this.group,
      consumer: this.consumer,
      deliveryCount: this.deliveryCount,
      maxDeliveries: this.maxDeliveries,
      retry: this.retry,
    }
    return new TestMessageImpl<A>(event, options, this.#state, 0)
  }

  #settle(settlement: TestSettlement, outcome: Outcome): Promise<Outcome> {
    const state = this.#state
    state.settlements.push(settlement)
    if (state.outcome === undefined) {
      if (state.withdrawn) return Promise.resolve('withdrawn')
      state.outcome = outcome
    }
    return Promise.resolve(state.outcome)
  }

  ack(): Promise<Outcome> {
    return this.#settle({ kind: 'ack' }, 'acked')
  }

  nack(error: unknown, options?: NackOptions): Promise<Outcome> {
    const outcome = this.deliveryCount >= this.maxDeliveries ? 'dead-lettered' : 'nacked'
    return this.#settle(options === undefined ? { kind: 'nack', reason: error } : { kind: 'nack', reason: error, options }, outcome)
  }

  deadLetter(reason: unknown): Promise<Outcome> {
    return this.#settle({ kind: 'deadLetter', reason }, 'dead-lettered')
  }
}

/**
 * A message for unit tests of handlers and pipelines, with no subscription
 * behind it: settlement happens in memory (the first call wins, as on a real
 * message; a nack on the last allowed delivery dead-letters) and every call is
 * recorded. It follows the message contract: `begin()` counts attempts and
 * returns false once it is settled or given back; `abort()` fires its signal.
 * Works under `TestScheduler` (nothing here waits).
 *
 * ## Example
 * ```ts
 * import { of } from 'rxjs'
 * import { handleEach } from 'rx-redis-streams/operators'
 * import { createTestMessage } from 'rx-redis-streams/testing'
 * const msg = createTestMessage({ userId: 1 }, { name: 'user.signup' })
 * of(msg).pipe(handleEach((m) => sendWelcomeMail(m.event.payload))).subscribe()
 * // later: expect(msg.outcome).toBe('acked'); expect(msg.attempts).toBe(1)
 * ```
 * @param payload the event's payload
 * @param options event and delivery fields
 * @returns a message that records its settlement
 */
export function createTestMessage<P>(payload: P, options: TestMessageOptions = {}): TestMessage<P> {
  const n = ++sequence
  const timestamp = options.timestamp ?? 0
  const event: { -readonly [K in keyof Event<P>]: Event<P>[K] } = {
    id: options.id ?? `evt-${n}`,
    name: options.name ?? 'test.event',
    payload,
    headers: options.headers ?? {},
    timestamp,
  }
  if (options.correlationId !== undefined) event.correlationId = options.correlationId
  const state: State = { outcome: undefined, withdrawn: false, attempts: 0, controller: new AbortController(), settlements: [], holds: [] }
  return new TestMessageImpl<P>(event, options, state, n)
}
