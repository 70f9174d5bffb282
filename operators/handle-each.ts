import { defer, from, mergeMap, Observable, type ObservableInput, type OperatorFunction } from 'rxjs'
import type { Message } from '../src/consumer/message.js'
import { runInHandlingContext } from '../src/context.js'
import type { Outcome } from '../src/settle.js'
import { ackOnComplete } from './ack-on-complete.js'
import { retryWithBackoff, type RetryWithBackoffConfig } from './retry-with-backoff.js'
import { toDeadLetter } from './to-dead-letter.js'

/** A message handler: resolve (or complete) to ack, reject (or error) to fail the attempt. */
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
  return mergeMap((message: Message<P>) => {
    const attempt = defer(() =>
      runInHandlingContext({ event: message.event, topic: message.topic, group: message.group }, () => handler(message) ?? Promise.resolve()),
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
    return detached(
      new Observable<Handled<P>>((subscriber) =>
        work.subscribe({
          error: (e: unknown) => subscriber.error(e),
          complete: () => {
            // Settlement is idempotent: once settled, ack() returns the first outcome, resolved when stored.
            from(message.ack().catch(() => message.outcome ?? 'nacked')).subscribe((outcome) => {
              subscriber.next({ message, outcome })
              subscriber.complete()
            })
          },
        }),
      ),
    )
  }, concurrency)
}
