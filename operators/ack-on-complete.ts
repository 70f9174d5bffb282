import { Observable, type MonoTypeOperatorFunction } from 'rxjs'
import { isPermanentError } from '../src/errors.js'
import type { Settleable } from '../src/settle.js'

/**
 * Settles `message` when the source ends: completion acks it; an error nacks it
 * (bad input dead-letters it at once) and completes, so one failing message
 * never terminates the topic subscription. A message already settled (e.g. by
 * `toDeadLetter`) is left as it is. Values pass through.
 *
 * ## Example
 * ```ts
 * import { defer, mergeMap } from 'rxjs'
 * import { ackOnComplete } from 'rx-redis-streams/operators'
 * messages$.pipe(mergeMap((msg) => defer(() => handle(msg)).pipe(ackOnComplete(msg)), 10))
 * ```
 * @param message the message (or window, or pair) to settle
 * @returns an operator that acks on completion and nacks on error
 */
export function ackOnComplete<T>(message: Settleable): MonoTypeOperatorFunction<T> {
  return (source) =>
    new Observable<T>((subscriber) =>
      source.subscribe({
        next: (value) => subscriber.next(value),
        error: (error: unknown) => {
          const settled = isPermanentError(error) ? message.deadLetter(error) : message.nack(error)
          settled.catch(() => undefined)
          subscriber.complete()
        },
        complete: () => {
          message.ack().catch(() => undefined)
          subscriber.complete()
        },
      }),
    )
}
