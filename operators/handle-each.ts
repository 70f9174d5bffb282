import { defer, from, mergeMap, Observable, tap, type ObservableInput, type OperatorFunction } from 'rxjs'
import type { Message } from '../src/consumer/message.js'
import { runInHandlingContext } from '../src/context.js'
import type { Logger } from '../src/logger.js'
import type { Outcome } from '../src/settle.js'
import { currentInstruments, messagingAttributes } from '../src/telemetry/instruments.js'
import { messageLogFields } from '../src/telemetry/logging.js'
import { startProcessSpan } from '../src/telemetry/tracing.js'
import { ackOnComplete } from './ack-on-complete.js'
import { retryWithBackoff, type RetryWithBackoffConfig } from './retry-with-backoff.js'
import { toDeadLetter } from './to-dead-letter.js'

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

/** Subscribes `inner` and lets it run to the end even when the outer subscriber unsubscribes, so in-flight work can settle during shutdown. */
function detached<T>(inner: Observable<T>): Observable<T> {
  return new Observable<T>((subscriber) => {
    inner.subscribe({
      next: (v) => {
        if (!subscriber.closed) subscriber.next(v)
      },
      error: (e: unknown) => {
        if (!subscriber.closed) subscriber.error(e)
      },
      complete: () => subscriber.complete(),
    })
  })
}

/**
 * The recommended way to handle messages: runs `handler` for each message
 * (up to `concurrency` at once), retries failures with exponential backoff,
 * dead-letters what still fails, acks what succeeds, and emits each outcome.
 * One failing message never ends the subscription; on unsubscribe, handlers
 * already running finish and settle (up to the subscription's drain timeout).
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
  const logger = options.logger
  return mergeMap((message: Message<P>) => {
    const startedAt = performance.now()
    const span = startProcessSpan(message)
    const instruments = currentInstruments()
    let attempts = 0
    let lastError: unknown
    const attempt = defer(() => {
      if (++attempts > 1) instruments.retried.add(1, messagingAttributes(message.topic, message.group))
      return span.run(() =>
        runInHandlingContext({ event: message.event, topic: message.topic, group: message.group }, () => handler(message) ?? Promise.resolve()),
      )
    }).pipe(
      tap({
        error: (error: unknown) => {
          lastError = error
          logger?.warn({ ...messageLogFields(message), err: error, attempt: attempts, deliveryCount: message.deliveryCount }, 'handler failed')
        },
      }),
    )
    const retry = options.retry
    const work =
      retry === false
        ? attempt.pipe(ackOnComplete(message))
        : attempt.pipe(
            retryWithBackoff({ maxRetries: message.retry.maxRetries, initialDelay: message.retry.initialDelay, ...retry }),
            toDeadLetter(message),
            ackOnComplete(message),
          )
    const finish = (outcome: Outcome): void => {
      const seconds = (performance.now() - startedAt) / 1_000
      const attributes = messagingAttributes(message.topic, message.group)
      attributes['messaging.operation.name'] = 'process'
      if (outcome !== 'acked') attributes['error.type'] = outcome
      instruments.processDuration.record(seconds, attributes)
      span.end(outcome, lastError)
      if (logger === undefined || (outcome === 'acked' && !logger.isLevelEnabled('debug'))) return
      const fields = { ...messageLogFields(message), outcome, attempts, durationMs: Math.round(seconds * 1_000) }
      if (outcome === 'acked') logger.debug(fields, 'handled')
      else logger.warn({ ...fields, err: lastError }, outcome === 'nacked' ? 'handling failed; will be delivered again' : 'handling failed; dead-lettered')
    }
    return detached(
      new Observable<Handled<P>>((subscriber) =>
        work.subscribe({
          error: (e: unknown) => {
            finish(message.outcome ?? 'nacked')
            subscriber.error(e)
          },
          complete: () => {
            // Settlement is idempotent: once settled, ack() returns the first outcome, resolved when stored.
            from(message.ack().catch(() => message.outcome ?? 'nacked')).subscribe((outcome) => {
              finish(outcome)
              subscriber.next({ message, outcome })
              subscriber.complete()
            })
          },
        }),
      ),
    )
  }, concurrency)
}
