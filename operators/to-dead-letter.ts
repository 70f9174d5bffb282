import { catchError, EMPTY, from, ignoreElements, type MonoTypeOperatorFunction } from 'rxjs'
import type { Settleable } from '../src/settle.js'
import { settleQuietly } from './handle-each.js'

/**
 * An error that reaches this operator dead-letters `message` (with the error's
 * message, capped in length) and completes, so the error never ends the
 * topic subscription. Values pass through. Accepts any settleable: a window
 * or pair dead-letters each of its messages. The dead-letter call never
 * rejects (a failed store leaves the message pending).
 *
 * ## Example
 * ```ts
 * import { defer, mergeMap } from 'rxjs'
 * import { retryWithBackoff, toDeadLetter, ackOnComplete } from 'rx-redis-streams/operators'
 * messages$.pipe(mergeMap((msg) => defer(() => handle(msg)).pipe(
 *   retryWithBackoff({ maxRetries: 3 }),
 *   toDeadLetter(msg),
 *   ackOnComplete(msg),
 * ), 10))
 * ```
 * @param message the message (or window, or pair) to dead-letter on error
 * @returns an operator that turns an error into a dead letter and completion
 */
export function toDeadLetter<T>(message: Settleable): MonoTypeOperatorFunction<T> {
  return (source) =>
    source.pipe(
      catchError((error: unknown) => (message.outcome === undefined ? from(settleQuietly(() => message.deadLetter(error))).pipe(ignoreElements()) : EMPTY)),
    )
}
