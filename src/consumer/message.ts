import type { ReadEntry, StreamBackend } from '../backend/types.js'
import { ConsumerTimeoutError, type DecodeError, type MalformedPayloadError } from '../errors.js'
import { setDecodeGuard, type Event, type StoredEvent } from '../event.js'
import { reasonText, type NackOptions, type Outcome, type Settleable } from '../settle.js'
import { creditLimit, creditLimitOf, firstDelivery, isFirstDelivery, operatorStateOf, operatorStateStore } from '../shared-settlement.js'
import { isSettleablePhase, step, type Phase } from './lifecycle.js'

/** Retry defaults carried by a message (from the Config), used by `retryWithBackoff` and `handleEach`. */
export interface RetryDefaults {
  readonly maxRetries: number
  readonly initialDelay: number
}

/**
 * One delivery of an event to one consumer of a group. Settle it exactly once
 * with `ack()`, `nack(error)` or `deadLetter(reason)`; later calls are no-ops
 * that resolve to the first outcome. Until it is settled it holds one unit of
 * the subscription's credit (`maxPendingMessages`).
 *
 * The consumer timeout bounds each handler attempt: it starts at `begin()`
 * (library operators call it for you), pauses on `holdUntil(Infinity)`. A
 * message emitted and not started within the timeout is given back (no
 * delivery counted): a later `begin()` returns false and `ack()` resolves
 * `'withdrawn'`. Settlement never rejects.
 *
 * ## Example
 * ```ts
 * events.topic('orders').consume({ group: 'billing' }).pipe(
 *   mergeMap(async (msg) => {
 *     if (!msg.begin()) return                 // given back or stopping: skip it
 *     try { await bill(msg.event.payload, msg.signal); await msg.ack() }
 *     catch (err) { await msg.nack(err) }      // redelivered after the backoff, DLQ when out of retries
 *   }, 4),
 * ).subscribe()
 * ```
 */
export interface Message<P = unknown> extends Settleable {
  readonly event: Event<P>
  /** The entry id in the topic stream, e.g. `1718000000000-0`. */
  readonly streamId: string
  readonly topic: string
  readonly group: string
  readonly consumer: string
  /** 1 on the first delivery; grows with each redelivery (nack, crash, claim). A give-back does not count. */
  readonly deliveryCount: number
  /** Deliveries allowed before the dead letter queue: `maxRetries + 1`. */
  readonly maxDeliveries: number
  readonly retry: RetryDefaults
  /**
   * Marks the start of one handler attempt: the consumer timeout counts from now. Returns false
   * when the message must not be run (settled, withdrawn, superseded by a redelivery, or its
   * subscription stopping): then the caller skips it. Library operators call it before every
   * attempt. It also counts handler runs (for the dead-letter record).
   */
  begin(): boolean
  /** Aborted when the current attempt times out, or when the subscription's drain deadline passes. */
  readonly signal: AbortSignal
  /**
   * Holds the message past `consumerTimeout`, until `untilMs` (epoch ms; `Infinity`
   * for as long as needed: an in-process backoff, a window). The last call wins;
   * `begin()` starts the timeout afresh. Leases keep being renewed while the
   * message is unsettled.
   */
  holdUntil(untilMs: number): void
  /** The same delivery (same settlement) carrying a decoded payload. */
  withPayload<A>(payload: A): Message<A>
}

/**
 * Gives back an unsettled message that will not be handled here: it leaves the
 * subscription's credit without being settled, its delivery count is unchanged,
 * and it becomes claimable by any consumer at once. Its later `begin()` returns
 * false and `ack()` resolves `'withdrawn'`. Shutdown need not wait for it.
 */
export const releaseMessage: unique symbol = Symbol.for('rx-redis-streams.releaseMessage')

/** Gives back a message not handled here, if it supports it (see {@link releaseMessage}). */
export function releaseUnhandled(message: unknown): void {
  if (message === null || typeof message !== 'object') return
  const release = (message as { [releaseMessage]?: unknown })[releaseMessage]
  if (typeof release === 'function') (release as () => void).call(message)
}

/** True on a message that must not be started: given back, superseded, or unstarted while its subscription stops. */
export const messageWithdrawn: unique symbol = Symbol.for('rx-redis-streams.messageWithdrawn')

/** Whether a message was withdrawn (see {@link messageWithdrawn}): handling it now would only race its new copy or the shutdown. */
export function isWithdrawn(message: unknown): boolean {
  if (message === null || typeof message !== 'object') return false
  return (message as { [messageWithdrawn]?: unknown })[messageWithdrawn] === true
}

/** The method behind {@link declareDemand}. */
export const demandDeclaration: unique symbol = Symbol.for('rx-redis-streams.declareDemand')

/**
 * Tells the message's subscription that the operator `holder` will hold up to `n`
 * of its messages at once (handleEach: its concurrency; a window or join: what it
 * needs). Unless the user set `maxPendingMessages`, the subscription's credit is the
 * sum of the declared demands plus 8 × max(`batchSize`, 50) of read-ahead (see the README's
 * "Backpressure"). The last declaration of a holder
 * wins. A no-op on values that do not support it.
 *
 * ## Example
 * ```ts
 * const holder = {}
 * messages$.pipe(tap((m) => declareDemand(m, holder, 8)), mergeMap(work, 8))
 * ```
 */
export function declareDemand(message: unknown, holder: object, n: number): void {
  if (message === null || typeof message !== 'object') return
  const declare = (message as { [demandDeclaration]?: unknown })[demandDeclaration]
  if (typeof declare === 'function') (declare as (holder: object, n: number) => void).call(message, holder, n)
}

/** The probe windows use to tell a genuinely idle source (see shared-settlement's `sourceIdle`). */
const sourceIdle: unique symbol = Symbol.for('rx-redis-streams.sourceIdle')

/** What a delivered message needs from its subscription. @internal */
export interface MessageHost {
  readonly topic: string
  readonly group: string
  readonly consumer: string
  readonly maxDeliveries: number
  readonly retry: RetryDefaults
  readonly consumerTimeoutMs: number
  /** The current credit limit. */
  readonly creditLimit: number
  /** The store the subscription reads from: window and join operators keep their state there. */
  readonly backend: StreamBackend
  /** Whether an attempt may start now on a message in `phase` (false once the subscription stops, but for messages the user took out of a pipeline that unsubscribed). */
  mayBegin(phase: Phase): boolean
  settleAck(message: DeliveredMessage): Promise<Outcome>
  settleNack(message: DeliveredMessage, error: unknown, options: NackOptions | undefined): void
  settleDeadLetter(message: DeliveredMessage, reason: unknown): Promise<Outcome>
  giveBack(message: DeliveredMessage): void
  /** An ack or dead-letter move was stored (`ok`) or failed; told before the settlement promise resolves. */
  storeDone(message: DeliveredMessage, ok: boolean): void
  /** An attempt began at `now` (epoch ms, the clock read once for its deadline too). */
  begun(message: DeliveredMessage, now: number): void
  parked(message: DeliveredMessage): void
  attemptReturned(message: DeliveredMessage): void
  declareDemand(holder: object, n: number): void
  malformed(message: DeliveredMessage, error: DecodeError): MalformedPayloadError
  idle(): boolean
}

const WITHDRAWN: Promise<Outcome> = Promise.resolve('withdrawn')
const NACKED: Promise<Outcome> = Promise.resolve('nacked')

/**
 * A delivered message; its life is the state machine of `lifecycle.ts`, its
 * settlement goes back to its subscription. @internal
 */
export class DeliveredMessage<P = unknown> implements Message<P> {
  readonly event: Event<P>
  readonly streamId: string
  readonly deliveryCount: number
  readonly deliveredAt: number
  /** @internal */
  readonly fields: readonly string[] | null
  /** @internal When the current wait (not started, or the attempt) times out (epoch ms). */
  deadline: number
  /** @internal Handler attempts started (begin() calls that returned true). */
  runs = 0
  /** @internal The last error a settlement carried (for the dead-letter record). */
  lastError: unknown
  /** @internal An attempt began and has not returned (no settlement call since). */
  attemptOpen = false
  /** @internal Its place in the order the subscription emitted messages. */
  seq = 0
  /** @internal It holds credit in its subscription (set and cleared by the subscription only). */
  held = false
  #phase: Phase = 'queued'
  #outcome: Outcome | undefined
  #result: Promise<Outcome> | undefined
  /** The engine failed the attempt (timeout): later settlement calls resolve 'withdrawn'. */
  #taken = false
  #controller: AbortController | undefined
  /** An abort before anyone read `signal`: the signal is created aborted, with this reason. */
  #aborted = false
  #abortReason: unknown
  readonly #host: MessageHost
  /** Read as a new entry (XREADGROUP `>`): no consumer of the group had it before (see shared-settlement's `firstDelivery`). */
  readonly #first: boolean

  constructor(host: MessageHost, entry: ReadEntry, event: StoredEvent, now: number, first = false) {
    this.#host = host
    this.#first = first
    this.streamId = entry.id
    this.fields = entry.fields
    this.deliveryCount = entry.deliveryCount
    this.deliveredAt = now
    this.deadline = now + host.consumerTimeoutMs
    // Its payload getter dead-letters an undecodable entry and throws MalformedPayloadError (see malformed()).
    setDecodeGuard(event, this)
    this.event = event as StoredEvent<P>
  }

  get topic(): string {
    return this.#host.topic
  }
  get group(): string {
    return this.#host.group
  }
  get consumer(): string {
    return this.#host.consumer
  }
  get maxDeliveries(): number {
    return this.#host.maxDeliveries
  }
  get retry(): RetryDefaults {
    return this.#host.retry
  }
  get outcome(): Outcome | undefined {
    return this.#outcome
  }
  /** @internal */
  get phase(): Phase {
    return this.#phase
  }

  /** Created on first read (most handlers never read it); already aborted when an abort came first. */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController()
      if (this.#aborted) this.#controller.abort(this.#abortReason)
    }
    return this.#controller.signal
  }

  /** @internal Aborts the current attempt's signal (only recorded when nobody read it yet). */
  abort(reason: unknown): void {
    if (this.#controller === undefined) {
      if (this.#aborted) return
      this.#aborted = true
      this.#abortReason = reason
      return
    }
    if (!this.#controller.signal.aborted) this.#controller.abort(reason)
  }

  /** @internal Moves along the lifecycle; false when `event` does not apply now. */
  transition(event: Parameters<typeof step>[1]): boolean {
    const next = step(this.#phase, event)
    if (next === undefined) return false
    this.#phase = next
    return true
  }

  begin(): boolean {
    if (this.#phase === 'failed' || !this.#host.mayBegin(this.#phase) || !this.transition('begin')) return false
    this.runs++
    this.attemptOpen = true
    const now = Date.now()
    this.deadline = now + this.#host.consumerTimeoutMs
    this.#host.begun(this, now)
    return true
  }

  /** The last call wins: the timeout counts again from `untilMs` (Infinity holds it indefinitely). */
  holdUntil(untilMs: number): void {
    if (!(untilMs < Number.POSITIVE_INFINITY)) {
      this.deadline = Number.POSITIVE_INFINITY
      // Parked by a window or join, or in a backoff: no longer on probation.
      this.#host.parked(this)
      return
    }
    this.deadline = Math.max(Date.now(), untilMs) + this.#host.consumerTimeoutMs
  }

  /** @internal The attempt timed out: its signal aborts, and it is nacked (a failed delivery). */
  expireAttempt(): void {
    const error = new ConsumerTimeoutError(this.streamId, this.#host.consumerTimeoutMs)
    if (this.#phase === 'running') {
      // The run is still going: its new copy waits until it returns (its next settlement call).
      const open = this.attemptOpen
      void this.nack(error)
      this.attemptOpen = open
      // The late run's own settlement then resolves 'withdrawn'.
      this.#taken = true
    }
    // Recorded first, aborted second: a handler that settles from its abort listener is already too late.
    this.abort(error)
  }

  /** @internal Given back (not started in time, stopping, or released): later calls resolve 'withdrawn'. */
  withdraw(): boolean {
    if (!this.transition('giveBack')) return false
    this.#outcome = 'withdrawn'
    this.#result = WITHDRAWN
    return true
  }

  /** @internal The store result of an ack or dead-letter move. */
  stored(outcome: Outcome, ok: boolean): Outcome {
    this.#host.storeDone(this, ok)
    if (ok) {
      this.transition('stored')
      return outcome
    }
    this.transition('storeFailed')
    // Not recorded: a later settlement may retry.
    this.#outcome = undefined
    this.#result = undefined
    return 'failed'
  }

  /** @internal */
  malformed(error: DecodeError): MalformedPayloadError {
    return this.#host.malformed(this, error)
  }

  /** Unsettled and not to be started: given back, superseded, taken by a timeout, or unstarted while stopping. */
  get [messageWithdrawn](): boolean {
    const phase = this.#phase
    return phase === 'withdrawn' || this.#taken || (phase === 'queued' && !this.#host.mayBegin(phase))
  }

  /** Gives it back now (see `releaseMessage`). */
  [releaseMessage](): void {
    this.#returned()
    this.#host.giveBack(this)
  }

  [demandDeclaration](holder: object, n: number): void {
    this.#host.declareDemand(holder, n)
  }

  /** The subscription's credit: windows and joins close early before holding more than this. */
  get [creditLimit](): number {
    return this.#host.creditLimit
  }

  [sourceIdle](): boolean {
    return this.#host.idle()
  }

  /** A first delivery (read as new): window operators never take it for a replay. */
  get [firstDelivery](): boolean {
    return this.#first
  }

  /** Where window and join operators keep their state across restarts: the subscription's store. */
  get [operatorStateStore](): StreamBackend {
    return this.#host.backend
  }

  withPayload<A>(payload: A): Message<A> {
    return new DecodedView<A>(this, payload)
  }

  #returned(): void {
    if (!this.attemptOpen) return
    this.attemptOpen = false
    this.#host.attemptReturned(this)
  }

  #stale(): Promise<Outcome> | undefined {
    this.#returned()
    if (this.#taken || this.#phase === 'withdrawn') return WITHDRAWN
    if (!isSettleablePhase(this.#phase)) return this.#result ?? WITHDRAWN
    return undefined
  }

  ack(): Promise<Outcome> {
    const stale = this.#stale()
    if (stale !== undefined) return stale
    this.transition('ack')
    this.#outcome = 'acked'
    this.#result = this.#host.settleAck(this)
    return this.#result
  }

  nack(error: unknown, options?: NackOptions): Promise<Outcome> {
    const stale = this.#stale()
    if (stale !== undefined) return stale
    this.lastError = error
    if (this.deliveryCount >= this.maxDeliveries) {
      return this.#deadLetter(`${reasonText(error)} (after ${String(this.deliveryCount)} deliveries)`)
    }
    this.transition('nack')
    this.#outcome = 'nacked'
    this.#result = NACKED
    if (this.#phase === 'waiting') this.#host.settleNack(this, error, options)
    return NACKED
  }

  deadLetter(reason: unknown): Promise<Outcome> {
    const stale = this.#stale()
    if (stale !== undefined) return stale
    if (reason instanceof Error) this.lastError = reason
    return this.#deadLetter(reason)
  }

  #deadLetter(reason: unknown): Promise<Outcome> {
    this.transition('deadLetter')
    this.#outcome = 'dead-lettered'
    this.#result = this.#host.settleDeadLetter(this, reason)
    return this.#result
  }
}

/** A message with a decoded payload; settlement is the original's. */
class DecodedView<A> implements Message<A> {
  readonly event: Event<A>
  readonly #inner: Message

  constructor(inner: Message, payload: A) {
    this.#inner = inner
    const e = inner.event
    const event: { -readonly [K in keyof Event<A>]: Event<A>[K] } = { id: e.id, name: e.name, payload, headers: e.headers, timestamp: e.timestamp }
    if (e.correlationId !== undefined) event.correlationId = e.correlationId
    // The producer's trace context travels on, so that the process span can link to it.
    const traceparent = (e as { readonly traceparent?: string }).traceparent
    if (traceparent !== undefined) Object.assign(event, { traceparent })
    this.event = event
  }

  get streamId(): string {
    return this.#inner.streamId
  }
  get topic(): string {
    return this.#inner.topic
  }
  get group(): string {
    return this.#inner.group
  }
  get consumer(): string {
    return this.#inner.consumer
  }
  get deliveryCount(): number {
    return this.#inner.deliveryCount
  }
  get maxDeliveries(): number {
    return this.#inner.maxDeliveries
  }
  get retry(): RetryDefaults {
    return this.#inner.retry
  }
  get outcome(): Outcome | undefined {
    return this.#inner.outcome
  }
  get signal(): AbortSignal {
    return this.#inner.signal
  }
  begin(): boolean {
    return this.#inner.begin()
  }
  holdUntil(untilMs: number): void {
    this.#inner.holdUntil(untilMs)
  }
  get [creditLimit](): number | undefined {
    return creditLimitOf(this.#inner)
  }
  [releaseMessage](): void {
    releaseUnhandled(this.#inner)
  }
  get [messageWithdrawn](): boolean {
    return isWithdrawn(this.#inner)
  }
  get [operatorStateStore](): unknown {
    return operatorStateOf(this.#inner)
  }
  [demandDeclaration](holder: object, n: number): void {
    declareDemand(this.#inner, holder, n)
  }
  [sourceIdle](): boolean {
    const probe = (this.#inner as { [sourceIdle]?: () => boolean })[sourceIdle]
    return probe === undefined ? true : probe.call(this.#inner)
  }
  get [firstDelivery](): boolean {
    return isFirstDelivery(this.#inner)
  }
  withPayload<B>(payload: B): Message<B> {
    return this.#inner.withPayload(payload)
  }
  ack(): Promise<Outcome> {
    return this.#inner.ack()
  }
  nack(error: unknown, options?: NackOptions): Promise<Outcome> {
    return this.#inner.nack(error, options)
  }
  deadLetter(reason: unknown): Promise<Outcome> {
    return this.#inner.deadLetter(reason)
  }
}
