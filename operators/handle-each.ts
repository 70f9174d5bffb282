import { from, lastValueFrom, Observable, type ObservableInput, type OperatorFunction, type SchedulerLike } from 'rxjs'
import type { Attributes } from '@opentelemetry/api'
import { isWithdrawn, releaseUnhandled, type Message } from '../src/consumer/message.js'
import { runInHandlingContext } from '../src/context.js'
import { isPermanentError } from '../src/errors.js'
import type { Logger } from '../src/logger.js'
import type { Outcome } from '../src/settle.js'
import { currentInstruments, messagingAttributes, type Instruments } from '../src/telemetry/instruments.js'
import { messageLogFields } from '../src/telemetry/logging.js'
import { startProcessSpan, type ProcessSpan } from '../src/telemetry/tracing.js'
import { retryPolicy, type RetryWithBackoffConfig } from './retry-with-backoff.js'

/** A message handler: resolve (or complete) to ack, reject (or error) to fail the attempt. */
// eslint-disable-next-line @typescript-eslint/no-invalid-void-type -- a synchronous handler returns nothing
export type Handler<P = unknown> = (message: Message<P>) => ObservableInput<unknown> | void

/** Options of {@link handleEach}. */
export interface HandleEachOptions {
  /** How many messages are handled at once. Default 1 (publish order). */
  readonly concurrency?: number
  /**
   * In-process retries before the dead letter queue. Default: the Config's
   * `maxRetries` and `retryBackoff`. `false`: no in-process retry; a failure
   * nacks the message, which is delivered again (with a higher delivery count)
   * until `maxRetries + 1` deliveries, then dead-lettered.
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
}

/** The settlement of one handled message. */
export interface Handled<P = unknown> {
  readonly message: Message<P>
  readonly outcome: Outcome
}

/** How one message's handling ended: its settlement call, attempts and last error. */
interface Attempted {
  readonly outcome: Promise<Outcome>
  readonly attempts: number
  readonly lastError: unknown
}

/** Turns what a handler returned into a promise, or undefined when it finished synchronously. */
// eslint-disable-next-line @typescript-eslint/no-invalid-void-type -- what a Handler returns
function settleResult(result: ObservableInput<unknown> | void): Promise<unknown> | undefined {
  if (result === undefined) return undefined
  if (typeof (result as PromiseLike<unknown>).then === 'function') return Promise.resolve(result as PromiseLike<unknown>)
  return lastValueFrom(from(result), { defaultValue: undefined })
}

const delay = (ms: number, scheduler: SchedulerLike | undefined): Promise<void> =>
  new Promise((resolve) => {
    if (scheduler === undefined) setTimeout(resolve, ms)
    else scheduler.schedule(() => resolve(), ms)
  })

/**
 * The recommended way to handle messages: runs `handler` for each message
 * (up to `concurrency` at once), retries failures with exponential backoff,
 * dead-letters what still fails, acks what succeeds, and emits each outcome.
 * It settles exactly like `retryWithBackoff` → `toDeadLetter` → `ackOnComplete`
 * composed in a `mergeMap`, but is written as one operator: the composition
 * costs about ten subscriptions per message, which halves throughput.
 * One failing message never ends the subscription; on unsubscribe, handlers
 * already running finish and settle (up to the subscription's drain timeout),
 * and messages not yet started stay pending for redelivery.
 * Events published inside the handler inherit the message's correlation id.
 * With an OpenTelemetry SDK registered, each message is handled under a
 * `process <topic>` span linked to its producer, its duration is recorded in
 * `messaging.process.duration`, and retries are counted.
 *
 * ## Example
 * ```ts
 * import { handleEach } from 'rx-redis-streams/operators'
 * events.topic('user-events').consume({ group: 'mailer' }).pipe(
 *   handleEach(async (msg) => sendWelcomeMail(msg.event.payload), { concurrency: 10 }),
 * ).subscribe()
 * ```
 * @param handler the work for one message
 * @param options concurrency and retry policy
 * @returns an operator emitting `{ message, outcome }` per message
 */
export function handleEach<P>(handler: Handler<P>, options: HandleEachOptions = {}): OperatorFunction<Message<P>, Handled<P>> {
  const concurrency = options.ordered === true ? 1 : (options.concurrency ?? 1)
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${String(concurrency)}`)
  const logger = options.logger
  const retry = options.retry
  const scheduler = retry === false ? undefined : retry?.scheduler
  const attributeCache = new Map<string, { base: Attributes; processed: Record<Outcome, Attributes> }>()
  const attributesOf = (message: Message<P>): { base: Attributes; processed: Record<Outcome, Attributes> } => {
    const key = `${message.topic}\u0000${message.group}`
    let cached = attributeCache.get(key)
    if (cached === undefined) {
      const base = messagingAttributes(message.topic, message.group)
      const processed = { ...base, 'messaging.operation.name': 'process' }
      cached = {
        base,
        processed: {
          acked: processed,
          nacked: { ...processed, 'error.type': 'nacked' },
          'dead-lettered': { ...processed, 'error.type': 'dead-lettered' },
        },
      }
      attributeCache.set(key, cached)
    }
    return cached
  }

  /** Handles one message to its settlement; resolves to the settlement call (not yet stored). */
  const handleOne = async (message: Message<P>, span: ProcessSpan, instruments: Instruments): Promise<Attempted> => {
    const context = { event: message.event, topic: message.topic, group: message.group }
    const policy = retry === false ? undefined : retryPolicy({ maxRetries: message.retry.maxRetries, initialDelay: message.retry.initialDelay, ...retry })
    let attempts = 0
    let lastError: unknown
    for (;;) {
      attempts++
      try {
        const pending = span.run(() => runInHandlingContext(context, () => settleResult(handler(message))))
        if (pending !== undefined) await pending
        return { outcome: message.ack(), attempts, lastError }
      } catch (error) {
        lastError = error
        logger?.warn({ ...messageLogFields(message), err: error, attempt: attempts, deliveryCount: message.deliveryCount }, 'handler failed')
        if (policy === undefined) {
          const outcome = isPermanentError(error) ? message.deadLetter(error) : message.nack(error)
          return { outcome, attempts, lastError }
        }
        if (message.outcome !== undefined || attempts > policy.maxRetries || !policy.shouldRetry(error)) {
          return { outcome: message.deadLetter(error), attempts, lastError }
        }
        instruments.retried.add(1, attributesOf(message).base)
        await delay(policy.delayFor(attempts), scheduler)
      }
    }
  }

  return (source) =>
    new Observable<Handled<P>>((subscriber) => {
      const queue: Message<P>[] = []
      let head = 0
      let active = 0
      let reporting = 0
      let sourceDone = false

      const start = (message: Message<P>): void => {
        active++
        const startedAt = performance.now()
        const instruments = currentInstruments()
        const span = startProcessSpan(message)
        void handleOne(message, span, instruments)
          .catch((error: unknown): Attempted => ({ outcome: message.nack(error), attempts: 0, lastError: error }))
          .then(({ outcome, attempts, lastError }) => {
            // The slot frees once the handler is done; the outcome is reported once the settlement is stored.
            active--
            reporting++
            pump()
            void outcome
              // The settlement could not be stored (e.g. XACK failed three times): the entry is still
              // pending and will be delivered again, which is a nack as far as anyone watching can tell.
              .catch((): Outcome => 'nacked')
              .then((settled) => {
                const seconds = (performance.now() - startedAt) / 1_000
                instruments.processDuration.record(seconds, attributesOf(message).processed[settled])
                span.end(settled, lastError)
                if (logger !== undefined && (settled !== 'acked' || logger.isLevelEnabled('debug'))) {
                  const fields = { ...messageLogFields(message), outcome: settled, attempts, durationMs: Math.round(seconds * 1_000) }
                  if (settled === 'acked') logger.debug(fields, 'handled')
                  else logger.warn({ ...fields, err: lastError }, settled === 'nacked' ? 'handling failed; will be delivered again' : 'handling failed; dead-lettered')
                }
                if (!subscriber.closed) subscriber.next({ message, outcome: settled })
                reporting--
                pump()
              })
          })
      }

      const pump = (): void => {
        while (active < concurrency && head < queue.length) {
          const message = queue[head++] as Message<P>
          if (head >= 1_024 && head * 2 >= queue.length) {
            queue.splice(0, head)
            head = 0
          }
          // Its subscription is shutting down: leave it pending rather than race the shutdown.
          if (isWithdrawn(message)) releaseUnhandled(message)
          else start(message)
        }
        if (sourceDone && active === 0 && reporting === 0 && head >= queue.length) subscriber.complete()
      }

      const subscription = source.subscribe({
        next: (message) => {
          queue.push(message)
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
        // Messages not started stay unsettled and pending: they are delivered again (restart, claim),
        // and the subscription's shutdown does not wait for them.
        for (let i = head; i < queue.length; i++) releaseUnhandled(queue[i])
        queue.length = 0
        head = 0
      }
    })
}
