import { from, Observable, type ObservableInput, type OperatorFunction, type SchedulerLike } from 'rxjs'
import type { Attributes } from '@opentelemetry/api'
import { declareDemand, isWithdrawn, releaseUnhandled, type Message, type RetryDefaults } from '../src/consumer/message.js'
import { runInHandlingContext } from '../src/context.js'
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

/** `settleQuietly(() => value.ack())` without the closure (the hot path: once per handled message). */
function ackQuietly(value: Settleable): Promise<Outcome> {
  try {
    return value.ack().catch(toFailed)
  } catch {
    return Promise.resolve('failed' as const)
  }
}

/**
 * The context of one attempt. Its `signal` is looked up on first read: a
 * message creates its AbortController only then, and most handlers never
 * read it. An abort before the first read still yields an aborted signal.
 */
function attemptContext(value: Settleable, attempt: number): HandlerContext {
  let signal: AbortSignal | undefined
  return {
    attempt,
    get signal(): AbortSignal {
      signal ??= signalOf(value)
      return signal
    },
  }
}

/** How one value's handling ended: its settlement call, attempts and last error. */
interface Attempted {
  readonly outcome: Promise<Outcome>
  /** What the settlement call asked for, reported at once under a scheduler. */
  readonly intended: Outcome
  readonly attempts: number
  readonly lastError: unknown
  /** False when the value was never run (begin() refused it): nothing is reported. */
  readonly ran: boolean
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
  const logFields = (message: Message | undefined): object => (message === undefined ? {} : messageLogFields(message))

  /**
   * Handles one value to its settlement, each attempt begun with `begin()`,
   * and calls `done` once (synchronously when everything was synchronous).
   */
  const handleOne = (value: T, representative: Message | undefined, span: ProcessSpan, instruments: Instruments, done: (attempted: Attempted) => void): void => {
    const context = representative === undefined ? undefined : { event: representative.event, topic: representative.topic, group: representative.group }
    const policy = policyOf(value)
    let attempts = 0
    let lastError: unknown
    const settled = (intended: Outcome, outcome: Promise<Outcome>): void => done({ outcome, intended, attempts, lastError, ran: true })
    const succeeded = (): void => settled('acked', ackQuietly(value))
    const failed = (error: unknown): void => {
      lastError = error
      logger?.warn({ ...logFields(representative), err: error, attempt: attempts, deliveryCount: representative?.deliveryCount }, 'handler failed')
      if (policy === undefined) {
        if (isPermanentError(error)) settled('dead-lettered', settleQuietly(() => value.deadLetter(error)))
        else settled('nacked', settleQuietly(() => value.nack(error)))
        return
      }
      if (value.outcome !== undefined || attempts > policy.maxRetries || !policy.shouldRetry(error)) {
        settled('dead-lettered', settleQuietly(() => value.deadLetter(error)))
        return
      }
      instruments.retried.add(1, attributesOf(representative).base)
      // The backoff does not count against the consumer timeout: the next begin() restarts it.
      holdForLater(value)
      wait(policy.delayFor(attempts), () => {
        releaseHeld(value, now())
        attempt()
      })
    }
    const attempt = (): void => {
      if (!beginAttempt(value)) {
        // Settled meanwhile (e.g. its attempt timed out), given back, or its subscription is stopping.
        if (attempts === 0) {
          giveBack(value)
          done({ outcome: Promise.resolve('withdrawn'), intended: 'withdrawn', attempts, lastError, ran: false })
          return
        }
        const outcome = value.outcome
        if (outcome === undefined) giveBack(value)
        settled(outcome ?? 'withdrawn', Promise.resolve(outcome ?? 'withdrawn'))
        return
      }
      attempts++
      const handlerContext = attemptContext(value, attempts)
      let finished = false
      const finish = (error: unknown, ok: boolean): void => {
        if (finished) return
        finished = true
        if (ok) succeeded()
        else failed(error)
      }
      try {
        const run = (): void => {
          const result: unknown = handler(value, handlerContext)
          // A plain value (or nothing) is a synchronous success.
          if (result === undefined || result === null || (typeof result !== 'object' && typeof result !== 'function' && typeof result !== 'string')) finish(undefined, true)
          else if (isPromiseLike(result)) {
            result.then(
              () => finish(undefined, true),
              (error: unknown) => finish(error, false),
            )
          } else {
            from(result as ObservableInput<unknown>).subscribe({ error: (error: unknown) => finish(error, false), complete: () => finish(undefined, true) })
          }
        }
        // Without tracing, no wrapper closure per attempt.
        if (span !== NO_SPAN) span.run(() => (context === undefined ? run() : runInHandlingContext(context, run)))
        else if (context === undefined) run()
        else runInHandlingContext(context, run)
      } catch (error) {
        finish(error, false)
      }
    }
    attempt()
  }

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

      const report = (value: T, representative: Message | undefined, span: ProcessSpan, instruments: Instruments, startedAt: number, attempted: Attempted, settled: Outcome): void => {
        const seconds = (performance.now() - startedAt) / 1_000
        instruments.processDuration.record(seconds, attributesOf(representative).processed[settled])
        span.end(settled, attempted.lastError)
        if (logger !== undefined && (settled !== 'acked' || logger.isLevelEnabled('debug'))) {
          const fields = { ...logFields(representative), outcome: settled, attempts: attempted.attempts, durationMs: Math.round(seconds * 1_000) }
          if (settled === 'acked') logger.debug(fields, 'handled')
          else if (settled === 'withdrawn') logger.info(fields, 'given back; it will be delivered again')
          else if (settled === 'failed') logger.warn({ ...fields, err: attempted.lastError }, 'settlement could not be stored; the message stays pending')
          else logger.warn({ ...fields, err: attempted.lastError }, settled === 'nacked' ? 'handling failed; will be delivered again' : 'handling failed; dead-lettered')
        }
        if (!subscriber.closed) subscriber.next({ message: value, outcome: settled })
        reporting--
        pump()
      }

      const start = (value: T): void => {
        active++
        const startedAt = performance.now()
        const instruments = currentInstruments()
        const representative = representativeOf(value)
        const span = representative === undefined || !isTracingEnabled() ? NO_SPAN : startProcessSpan(representative)
        handleOne(value, representative, span, instruments, (attempted) => {
          // The slot frees once the handler is done; the outcome is reported once the settlement is stored.
          active--
          if (!attempted.ran) {
            span.end('withdrawn', undefined)
            pump()
            return
          }
          reporting++
          if (scheduler !== undefined) {
            // Virtual time: report what the settlement asked for, now (the store's reply comes in real time).
            report(value, representative, span, instruments, startedAt, attempted, value.outcome ?? attempted.intended)
            return
          }
          pump()
          void attempted.outcome.then((settled) => report(value, representative, span, instruments, startedAt, attempted, settled))
        })
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
