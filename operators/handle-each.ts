import { from, Observable, type ObservableInput, type OperatorFunction, type SchedulerLike } from 'rxjs'
import type { Attributes } from '@opentelemetry/api'
import { declareDemand, DeliveredMessage, isWithdrawn, releaseUnhandled, type Message, type RetryDefaults } from '../src/consumer/message.js'
import { currentHandlingContext, runInContext, type HandlingContext } from '../src/context.js'
import { isPermanentError } from '../src/errors.js'
import type { Logger } from '../src/logger.js'
import type { Outcome, Settleable } from '../src/settle.js'
import { holdOpen, releaseHold } from '../src/shared-settlement.js'
import { currentInstruments, messagingAttributes, type Instruments } from '../src/telemetry/instruments.js'
import { messageLogFields } from '../src/telemetry/logging.js'
import { isTracingEnabled, startProcessSpan, type ProcessSpan } from '../src/telemetry/tracing.js'
import { retryPolicy, type RetryPolicy, type RetryWithBackoffConfig } from './retry-with-backoff.js'

/** What a handler is given besides the message. */
export interface HandlerContext {
  /**
   * Aborted when this attempt times out (`consumerTimeout`) or when the
   * subscription's drain deadline passes on shutdown: stop the work, its
   * message stays pending and runs again.
   */
  readonly signal: AbortSignal
  /** 1 for the first attempt in this process, 2 for the first in-process retry, … */
  readonly attempt: number
}

/**
 * A message handler: resolve (or complete, or return) to ack, reject (or
 * error, or throw) to fail the attempt. The second argument carries the
 * attempt's `signal`; handlers that take one argument keep working.
 */
// eslint-disable-next-line @typescript-eslint/no-invalid-void-type -- a synchronous handler returns nothing
export type Handler<P = unknown> = (message: Message<P>, context: HandlerContext) => ObservableInput<unknown> | void

/** A handler of any settleable value: a message, a window, a reduced window, a joined pair. */
// eslint-disable-next-line @typescript-eslint/no-invalid-void-type -- a synchronous handler returns nothing
export type SettleableHandler<T extends Settleable> = (value: T, context: HandlerContext) => ObservableInput<unknown> | void

/** Options of {@link handleEach}. */
export interface HandleEachOptions {
  /** How many messages are handled at once. Default 1 (publish order). */
  readonly concurrency?: number
  /**
   * In-process retries before the dead letter queue. Default: the message's
   * retry defaults (the Config's `maxRetries` and `retryBackoff`; for a window
   * or pair those of its first message; else maxRetries 3, initialDelay 1000).
   * `false`: no in-process retry; a failure nacks the message, which is
   * delivered again (with a higher delivery count) until `maxRetries + 1`
   * deliveries, then dead-lettered. The consumer timeout bounds each attempt
   * and is paused during the backoff between attempts.
   */
  readonly retry?: RetryWithBackoffConfig | false
  /** Handle strictly one at a time in delivery order (same as `concurrency: 1`). */
  readonly ordered?: boolean
  /**
   * Where failed attempts (warn) and outcomes (debug) are logged, each line with
   * topic, group, consumer, streamId, eventId and correlationId. Default: none
   * (`events.subscribe` passes the event manager's logger).
   */
  readonly logger?: Logger
  /**
   * Virtual time: the retry delays run on this scheduler (a `TestScheduler`,
   * or the `VirtualClock` of `rx-redis-streams/testing`), the retry jitter
   * defaults to 0, and each outcome is emitted as soon as its settlement is
   * issued (virtual time cannot wait for a store's reply). Handlers returning
   * an Observable or a plain value then run entirely in virtual time. Default:
   * `retry.scheduler`, else real timers.
   */
  readonly scheduler?: SchedulerLike
}

/** The settlement of one handled message (or window, or pair: `message` is the value handled). */
export interface Handled<P = unknown, T extends Settleable = Message<P>> {
  readonly message: T
  readonly outcome: Outcome
}

/*
 * The operator side of the message contract (issue #10), shared by handleEach,
 * ackOnComplete, orderedBy and filterMessages: how a library operator starts,
 * holds, gives back and sizes demand for any Settleable — a Message, or a
 * composite (window, reduced window, joined pair, late event) made of messages.
 */

/** A signal that never aborts, for values that carry none. */
const NEVER_ABORTED: AbortSignal = new AbortController().signal

interface Beginnable {
  begin(): boolean
}
interface Holdable {
  holdUntil(untilMs: number): void
}
interface WithRetry {
  readonly retry: RetryDefaults
}

const isObject = (value: unknown): value is object => value !== null && typeof value === 'object'
const hasBegin = (value: object): value is Beginnable => typeof (value as Partial<Beginnable>).begin === 'function'
const hasHold = (value: object): value is Holdable => typeof (value as Partial<Holdable>).holdUntil === 'function'

/** A stream entry's delivery (a Message or a view of one), as opposed to a composite of them. */
export function isDelivery(value: unknown): value is Message {
  return isObject(value) && typeof (value as { streamId?: unknown }).streamId === 'string' && hasHold(value)
}

/**
 * The values a composite settles: the shares of a CompositeSettleable, the
 * messages of a window, the window of a reduced window, both sides of a join
 * result, the message of a late event. Empty for a delivery.
 */
export function constituentsOf(value: unknown): readonly unknown[] {
  if (!isObject(value) || isDelivery(value)) return []
  const v = value as {
    readonly constituents?: unknown
    readonly messages?: unknown
    readonly window?: unknown
    readonly left?: unknown
    readonly right?: unknown
    readonly message?: unknown
  }
  if (Array.isArray(v.constituents)) return v.constituents as unknown[]
  if (Array.isArray(v.messages)) return v.messages as unknown[]
  if (isObject(v.window)) return [v.window]
  if ('left' in v || 'right' in v) return [v.left, v.right].filter(isObject)
  if (isObject(v.message)) return [v.message]
  return []
}

/** Every delivery inside a value (the value itself when it is one), depth first. */
export function deliveriesOf(value: unknown, out: Message[] = [], depth = 0): Message[] {
  if (isDelivery(value)) out.push(value)
  else if (depth < 8) for (const part of constituentsOf(value)) deliveriesOf(part, out, depth + 1)
  return out
}

/** The first delivery inside a value (for log fields, spans and metric attributes). */
export function representativeOf(value: unknown, depth = 0): Message | undefined {
  if (isDelivery(value)) return value
  if (depth >= 8) return undefined
  for (const part of constituentsOf(value)) {
    const found = representativeOf(part, depth + 1)
    if (found !== undefined) return found
  }
  return undefined
}

/**
 * The retry defaults for a value: its own `retry` when it has one, else those
 * of its first constituent that has one, else undefined (the caller applies
 * the documented defaults: maxRetries 3, initialDelay 1000).
 */
export function retryDefaultsOf(value: unknown, depth = 0): RetryDefaults | undefined {
  if (!isObject(value)) return undefined
  const own = (value as Partial<WithRetry>).retry
  if (isObject(own) && typeof own.maxRetries === 'number' && typeof own.initialDelay === 'number') return own
  if (depth >= 8) return undefined
  for (const part of constituentsOf(value)) {
    const found = retryDefaultsOf(part, depth + 1)
    if (found !== undefined) return found
  }
  return undefined
}

/**
 * Marks the start of one handler attempt (`message.begin()`); false when the
 * value must not be run: it is settled, withdrawn, superseded or its
 * subscription is stopping. A composite starts when it is unsettled: its
 * constituents' timeouts restart when it was released from its window (and
 * are paused by {@link holdForLater} while it waits here).
 */
export function beginAttempt(value: Settleable): boolean {
  if (hasBegin(value)) return value.begin()
  if (isDelivery(value)) return value.outcome === undefined && !isWithdrawn(value)
  return value.outcome === undefined
}

/** The abort signal of the current attempt: the message's, or any of a composite's constituents' (first to abort). */
export function signalOf(value: Settleable): AbortSignal {
  const own = (value as { readonly signal?: unknown }).signal
  if (own instanceof AbortSignal) return own
  if (isDelivery(value)) return NEVER_ABORTED
  const signals = new Set<AbortSignal>()
  for (const delivery of deliveriesOf(value)) {
    const s = (delivery as { readonly signal?: unknown }).signal
    if (s instanceof AbortSignal) signals.add(s)
  }
  if (signals.size === 0) return NEVER_ABORTED
  if (signals.size === 1) return [...signals][0] as AbortSignal
  return AbortSignal.any([...signals])
}

/**
 * Pauses the consumer timeout of a value that waits in an operator (queued
 * behind the concurrency, or between in-process retries): `holdUntil(Infinity)`
 * on a message; a composite pins each constituent (as an open window does),
 * undone by {@link releaseHeld}.
 */
export function holdForLater(value: Settleable): void {
  if (isDelivery(value)) {
    value.holdUntil(Number.POSITIVE_INFINITY)
    return
  }
  for (const delivery of deliveriesOf(value)) holdOpen(delivery)
}

/** Undoes {@link holdForLater} for a composite (a message's hold ends with its next `begin()`). */
export function releaseHeld(value: Settleable, nowMs: number): void {
  if (isDelivery(value)) return
  for (const delivery of deliveriesOf(value)) releaseHold(delivery, nowMs)
}

/** Gives back an unsettled value this operator will not run: a message, or every delivery of a composite. */
export function giveBack(value: unknown): void {
  if (isDelivery(value) || hasBegin(value as object)) {
    releaseUnhandled(value)
    return
  }
  for (const delivery of deliveriesOf(value)) releaseUnhandled(delivery)
}

/**
 * Tells the subscription(s) of a value that `holder` holds up to `n` of their
 * messages at once (so credit follows the concurrency). Composites declare on
 * each constituent delivery.
 */
export function declareDemandOf(value: unknown, holder: object, n: number): void {
  if (isDelivery(value)) {
    declareDemand(value, holder, n)
    return
  }
  for (const delivery of deliveriesOf(value)) declareDemand(delivery, holder, n)
}

const toFailed = (): Outcome => 'failed'

/** Runs a settlement call so that it can never produce a rejection: a throw or rejection resolves to `'failed'`. */
export function settleQuietly(settle: () => Promise<Outcome>): Promise<Outcome> {
  try {
    return settle().catch(toFailed)
  } catch {
    return Promise.resolve('failed' as const)
  }
}

/**
 * `settleQuietly(() => value.ack())` without the closure (the hot path: once per handled message).
 * A delivered message's ack never rejects (its store failure resolves `'failed'`): no `catch` promise for it.
 */
function ackQuietly(value: Settleable): Promise<Outcome> {
  try {
    if (value instanceof DeliveredMessage) return value.ack()
    return value.ack().catch(toFailed)
  } catch {
    return Promise.resolve('failed' as const)
  }
}

/**
 * The context of one attempt. Its `signal` is looked up on first read: a
 * message creates its AbortController only then, and most handlers never
 * read it. An abort before the first read still yields an aborted signal.
 * `signal` is an own enumerable getter (`{ ...context }` copies it), defined
 * with one shared descriptor: an object literal with a getter costs about
 * three times as much (a closure and an accessor pair per attempt).
 */
class AttemptContext implements HandlerContext {
  readonly attempt: number
  declare readonly signal: AbortSignal
  readonly #value: Settleable
  #signal: AbortSignal | undefined

  constructor(value: Settleable, attempt: number) {
    this.attempt = attempt
    this.#value = value
    Object.defineProperty(this, 'signal', SIGNAL_PROPERTY)
  }

  static signalOf(context: AttemptContext): AbortSignal {
    context.#signal ??= signalOf(context.#value)
    return context.#signal
  }
}

const SIGNAL_PROPERTY: PropertyDescriptor = {
  get(this: AttemptContext): AbortSignal {
    return AttemptContext.signalOf(this)
  },
  enumerable: true,
}

const WITHDRAWN: Promise<Outcome> = Promise.resolve('withdrawn')

/** `handling.call(context)` for {@link runInContext} (no closure per attempt). */
const callHandler = <T extends Settleable>(handling: Handling<T>, context: HandlerContext): void => handling.call(context)

const logFieldsOf = (message: Message | undefined): object => (message === undefined ? {} : messageLogFields(message))

/** What a {@link Handling} needs from its handleEach call (one object per operator). */
interface HandlingShared<T extends Settleable> {
  readonly handler: SettleableHandler<T>
  readonly logger: Logger | undefined
  readonly now: () => number
  readonly wait: (ms: number, then: () => void) => void
  readonly policyOf: (value: T) => RetryPolicy | undefined
  readonly retriedAttributes: (message: Message | undefined) => Attributes
}

/**
 * One value's handling to its settlement: its attempts (each begun with
 * `begin()`), its settlement call and what is reported. One object per value,
 * its steps on the prototype: no closures per message on the synchronous path.
 * `onDone` is called once (synchronously when everything was synchronous).
 */
class Handling<T extends Settleable> {
  readonly value: T
  readonly representative: Message | undefined
  readonly span: ProcessSpan
  readonly instruments: Instruments
  readonly startedAt: number
  attempts = 0
  lastError: unknown = undefined
  /** The settlement call's result (set once done). */
  outcome: Promise<Outcome> = WITHDRAWN
  /** What the settlement call asked for, reported at once under a scheduler. */
  intended: Outcome = 'withdrawn'
  /** False when the value was never run (begin() refused it): nothing is reported. */
  ran = true
  /** The handling context its outcome is reported in (the one it was done in). */
  reportContext: HandlingContext | undefined
  /** The current attempt ended (only its first ending counts). */
  #finished = false
  readonly #shared: HandlingShared<T>
  readonly #onDone: (handling: Handling<T>) => void

  constructor(shared: HandlingShared<T>, onDone: (handling: Handling<T>) => void, value: T, representative: Message | undefined, span: ProcessSpan, instruments: Instruments, startedAt: number) {
    this.#shared = shared
    this.#onDone = onDone
    this.value = value
    this.representative = representative
    this.span = span
    this.instruments = instruments
    this.startedAt = startedAt
  }

  attempt(): void {
    const value = this.value
    if (!beginAttempt(value)) {
      // Settled meanwhile (e.g. its attempt timed out), given back, or its subscription is stopping.
      if (this.attempts === 0) {
        giveBack(value)
        this.ran = false
        this.#done('withdrawn', WITHDRAWN)
        return
      }
      const outcome = value.outcome
      if (outcome === undefined) giveBack(value)
      this.#done(outcome ?? 'withdrawn', outcome === undefined ? WITHDRAWN : Promise.resolve(outcome))
      return
    }
    this.attempts++
    this.#finished = false
    const context = new AttemptContext(value, this.attempts)
    try {
      // Without tracing, no wrapper closure per attempt.
      if (this.span !== NO_SPAN) this.span.run(() => this.#enter(context))
      else this.#enter(context)
    } catch (error) {
      this.#finish(this.attempts, error, false)
    }
  }

  /**
   * Runs the handler in the value's handling context: its message is the context
   * (event, topic, group), already current when it starts inside its own delivery.
   */
  #enter(context: HandlerContext): void {
    const representative = this.representative
    if (representative === undefined || currentHandlingContext() === representative) this.call(context)
    else runInContext(representative, callHandler, this, context)
  }

  /** @internal One attempt's handler call (see {@link callHandler}). */
  call(context: HandlerContext): void {
    const attempt = this.attempts
    const result: unknown = this.#shared.handler(this.value, context)
    // A plain value (or nothing) is a synchronous success.
    if (result === undefined || result === null || (typeof result !== 'object' && typeof result !== 'function' && typeof result !== 'string')) this.#finish(attempt, undefined, true)
    else if (isPromiseLike(result)) {
      result.then(
        () => this.#finish(attempt, undefined, true),
        (error: unknown) => this.#finish(attempt, error, false),
      )
    } else {
      from(result as ObservableInput<unknown>).subscribe({ error: (error: unknown) => this.#finish(attempt, error, false), complete: () => this.#finish(attempt, undefined, true) })
    }
  }

  /** The end of attempt `attempt`; a second ending of the same attempt (or one of an earlier attempt) is ignored. */
  #finish(attempt: number, error: unknown, ok: boolean): void {
    if (attempt !== this.attempts || this.#finished) return
    this.#finished = true
    if (ok) this.#done('acked', ackQuietly(this.value))
    else this.#failed(error)
  }

  #failed(error: unknown): void {
    const value = this.value
    const representative = this.representative
    const shared = this.#shared
    // Looked up on failure only (a message's retry defaults do not change): nothing per message that succeeds.
    const policy = shared.policyOf(value)
    this.lastError = error
    shared.logger?.warn({ ...logFieldsOf(representative), err: error, attempt: this.attempts, deliveryCount: representative?.deliveryCount }, 'handler failed')
    if (policy === undefined) {
      if (isPermanentError(error)) this.#done('dead-lettered', settleQuietly(() => value.deadLetter(error)))
      else this.#done('nacked', settleQuietly(() => value.nack(error)))
      return
    }
    if (value.outcome !== undefined || this.attempts > policy.maxRetries || !policy.shouldRetry(error)) {
      this.#done('dead-lettered', settleQuietly(() => value.deadLetter(error)))
      return
    }
    this.instruments.retried.add(1, shared.retriedAttributes(representative))
    // The backoff does not count against the consumer timeout: the next begin() restarts it.
    holdForLater(value)
    shared.wait(policy.delayFor(this.attempts), () => {
      releaseHeld(value, shared.now())
      this.attempt()
    })
  }

  #done(intended: Outcome, outcome: Promise<Outcome>): void {
    this.intended = intended
    this.outcome = outcome
    this.#onDone(this)
  }
}

const isPromiseLike = (value: unknown): value is PromiseLike<unknown> =>
  isObject(value) && typeof (value as { then?: unknown }).then === 'function'

const NO_SPAN: ProcessSpan = { run: (fn) => fn(), end: () => undefined }

type AttributesEntry = { base: Attributes; processed: Record<Outcome, Attributes> }

/**
 * The recommended way to handle messages: runs `handler` for each message
 * (up to `concurrency` at once), retries failures with exponential backoff,
 * dead-letters what still fails, acks what succeeds, and emits each outcome.
 * It settles exactly like `retryWithBackoff` → `toDeadLetter` → `ackOnComplete`
 * composed in a `mergeMap`, but is written as one operator: the composition
 * costs about ten subscriptions per message, which halves throughput.
 *
 * The message contract: every attempt starts with `message.begin()` (the
 * consumer timeout counts from there and bounds each attempt; it is paused
 * while the message waits in the queue or between in-process retries), a
 * message that `begin()` refuses (settled, given back, superseded by a
 * redelivery, or its subscription stopping) is never run, and the handler
 * gets the attempt's `signal`. Credit follows the concurrency (unless
 * `maxPendingMessages` is set). It accepts every settleable: windows, reduced
 * windows and joined pairs settle each of their messages.
 *
 * One failing message never ends the subscription. It completes after the
 * source completed and every message it took was handled and reported — so
 * put `takeUntil(stop$)` before it (after it, `takeUntil` completes at once
 * and the outcomes of running handlers are not emitted, though they still
 * settle). On unsubscribe, handlers already running finish and settle (up to
 * the subscription's drain timeout), and queued messages are given back.
 * Events published inside the handler inherit the message's correlation id.
 * With an OpenTelemetry SDK registered, each message is handled under a
 * `process <topic>` span linked to its producer, its duration is recorded in
 * `messaging.process.duration`, and retries are counted.
 *
 * ## Example
 * ```ts
 * import { handleEach } from 'rx-redis-streams/operators'
 * events.topic('user-events').consume({ group: 'mailer' }).pipe(
 *   handleEach(async (msg, { signal }) => sendWelcomeMail(msg.event.payload, { signal }), { concurrency: 10 }),
 * ).subscribe()
 * ```
 * @param handler the work for one message (or window, or pair)
 * @param options concurrency, retry policy, logger, scheduler
 * @returns an operator emitting `{ message, outcome }` per message
 */
export function handleEach<T extends Settleable>(handler: SettleableHandler<T>, options?: HandleEachOptions): OperatorFunction<T, Handled<unknown, T>>
export function handleEach<P>(handler: Handler<P>, options?: HandleEachOptions): OperatorFunction<Message<P>, Handled<P>>
export function handleEach<T extends Settleable>(handler: SettleableHandler<T>, options: HandleEachOptions = {}): OperatorFunction<T, Handled<unknown, T>> {
  const concurrency = options.ordered === true ? 1 : (options.concurrency ?? 1)
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${String(concurrency)}`)
  const logger = options.logger
  const retry = options.retry
  const scheduler = options.scheduler ?? (retry === false ? undefined : retry?.scheduler)
  const now = (): number => (scheduler === undefined ? Date.now() : scheduler.now())
  const attributeCache = new Map<string, AttributesEntry>()
  // The last topic and group looked up: a pipeline mostly reads one (no key string per message).
  let lastTopic: string | undefined
  let lastGroup: string | undefined
  let lastAttributes: AttributesEntry | undefined
  const attributesOf = (message: Message | undefined): AttributesEntry => {
    const topic = message?.topic ?? ''
    const group = message?.group ?? ''
    if (lastAttributes !== undefined && topic === lastTopic && group === lastGroup) return lastAttributes
    const key = `${topic}\u0000${group}`
    let cached = attributeCache.get(key)
    if (cached === undefined) {
      const base = messagingAttributes(topic, group)
      const processed = { ...base, 'messaging.operation.name': 'process' }
      cached = {
        base,
        processed: {
          acked: processed,
          nacked: { ...processed, 'error.type': 'nacked' },
          'dead-lettered': { ...processed, 'error.type': 'dead-lettered' },
          withdrawn: { ...processed, 'error.type': 'withdrawn' },
          failed: { ...processed, 'error.type': 'failed' },
        },
      }
      attributeCache.set(key, cached)
    }
    lastTopic = topic
    lastGroup = group
    lastAttributes = cached
    return cached
  }
  const policies = new WeakMap<RetryDefaults, RetryPolicy>()
  let defaultPolicy: RetryPolicy | undefined
  // The last defaults seen (one subscription's): no WeakMap lookup per message.
  let lastDefaults: RetryDefaults | undefined
  let lastPolicy: RetryPolicy | undefined
  const policyOf = (value: T): RetryPolicy | undefined => {
    if (retry === false) return undefined
    const defaults = retryDefaultsOf(value)
    if (defaults !== undefined && defaults === lastDefaults && lastPolicy !== undefined) return lastPolicy
    const cached = defaults === undefined ? defaultPolicy : policies.get(defaults)
    const policy =
      cached ??
      retryPolicy({
        ...(defaults === undefined ? {} : { maxRetries: defaults.maxRetries, initialDelay: defaults.initialDelay }),
        ...(scheduler === undefined ? {} : { jitter: 0 }),
        ...retry,
      })
    if (defaults === undefined) defaultPolicy = policy
    else {
      if (cached === undefined) policies.set(defaults, policy)
      lastDefaults = defaults
      lastPolicy = policy
    }
    return policy
  }
  const wait = (ms: number, then: () => void): void => {
    if (scheduler === undefined) setTimeout(then, ms)
    else scheduler.schedule(then, ms)
  }
  const shared: HandlingShared<T> = { handler, logger, now, wait, policyOf, retriedAttributes: (message) => attributesOf(message).base }

  return (source) =>
    new Observable<Handled<unknown, T>>((subscriber) => {
      /** This operator's part in the demand of the subscriptions it reads from. */
      const demandHolder = {}
      const queue: T[] = []
      let head = 0
      let active = 0
      let reporting = 0
      let sourceDone = false
      let pumping = false
      let pumpAgain = false

      /** Reports one outcome; `now` is performance.now(), read once for all the reports of one settlement. */
      const report = (handling: Handling<T>, settled: Outcome, now: number): void => {
        const representative = handling.representative
        const seconds = (now - handling.startedAt) / 1_000
        handling.instruments.processDuration.record(seconds, attributesOf(representative).processed[settled])
        handling.span.end(settled, handling.lastError)
        if (logger !== undefined && (settled !== 'acked' || logger.isLevelEnabled('debug'))) {
          const fields = { ...logFieldsOf(representative), outcome: settled, attempts: handling.attempts, durationMs: Math.round(seconds * 1_000) }
          if (settled === 'acked') logger.debug(fields, 'handled')
          else if (settled === 'withdrawn') logger.info(fields, 'given back; it will be delivered again')
          else if (settled === 'failed') logger.warn({ ...fields, err: handling.lastError }, 'settlement could not be stored; the message stays pending')
          else logger.warn({ ...fields, err: handling.lastError }, settled === 'nacked' ? 'handling failed; will be delivered again' : 'handling failed; dead-lettered')
        }
        if (!subscriber.closed) subscriber.next({ message: handling.value, outcome: settled })
        reporting--
        pump()
      }

      // Reports waiting for the same settlement promise (the acks of one XACK batch share one): one `then` for them all.
      let waitingOn: Promise<Outcome> | undefined
      let waiting: Handling<T>[] | undefined
      const reportAll = (list: Handling<T>[], settled: Outcome): void => {
        if (waiting === list) {
          waitingOn = undefined
          waiting = undefined
        }
        const now = performance.now()
        for (const handling of list) {
          // Each outcome is emitted in the handling context it was done in (as with a `then` of its own).
          if (handling.reportContext === currentHandlingContext()) report(handling, settled, now)
          else runInContext(handling.reportContext, report, handling, settled, now)
        }
      }
      const reportWhenStored = (handling: Handling<T>): void => {
        handling.reportContext = currentHandlingContext()
        if (waiting !== undefined && handling.outcome === waitingOn) {
          waiting.push(handling)
          return
        }
        const list = [handling]
        waitingOn = handling.outcome
        waiting = list
        void handling.outcome.then((settled) => reportAll(list, settled))
      }

      /** The handling of a value is done: the slot frees; the outcome is reported once the settlement is stored. */
      const handled = (handling: Handling<T>): void => {
        active--
        if (!handling.ran) {
          handling.span.end('withdrawn', undefined)
          pump()
          return
        }
        reporting++
        if (scheduler !== undefined) {
          // Virtual time: report what the settlement asked for, now (the store's reply comes in real time).
          report(handling, handling.value.outcome ?? handling.intended, performance.now())
          return
        }
        pump()
        reportWhenStored(handling)
      }

      const start = (value: T): void => {
        active++
        const representative = representativeOf(value)
        const span = representative === undefined || !isTracingEnabled() ? NO_SPAN : startProcessSpan(representative)
        new Handling(shared, handled, value, representative, span, currentInstruments(), performance.now()).attempt()
      }

      const pump = (): void => {
        // Synchronous handlers finish inside start(): loop instead of recursing once per message.
        if (pumping) {
          pumpAgain = true
          return
        }
        pumping = true
        try {
          do {
            pumpAgain = false
            while (active < concurrency && head < queue.length) {
              const value = queue[head++] as T
              if (head >= 1_024 && head * 2 >= queue.length) {
                queue.splice(0, head)
                head = 0
              }
              start(value)
            }
          // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- start() sets it through a re-entrant pump()
          } while (pumpAgain)
        } finally {
          pumping = false
        }
        if (sourceDone && active === 0 && reporting === 0 && head >= queue.length) subscriber.complete()
      }

      const subscription = source.subscribe({
        next: (value) => {
          declareDemandOf(value, demandHolder, concurrency)
          queue.push(value)
          // Queued behind the concurrency: a library operator starts what it queues, so its timeout waits.
          if (active >= concurrency || pumping) holdForLater(value)
          pump()
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => {
          sourceDone = true
          pump()
        },
      })
      return () => {
        subscription.unsubscribe()
        // Messages not started are given back: delivered again (to this group's consumers), and
        // the subscription's shutdown does not wait for them.
        for (let i = head; i < queue.length; i++) giveBack(queue[i])
        queue.length = 0
        head = 0
      }
    })
}
