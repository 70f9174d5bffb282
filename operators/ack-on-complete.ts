import { Observable, type MonoTypeOperatorFunction } from 'rxjs'
import { isPermanentError } from '../src/errors.js'
import type { Settleable } from '../src/settle.js'
import { beginAttempt, giveBack, settleQuietly } from './handle-each.js'

/**
 * Settles `message` when the source ends: completion acks it; an error nacks it
 * (bad input dead-letters it at once) and completes, so one failing message
 * never terminates the topic subscription. A message already settled (e.g. by
 * `toDeadLetter`) is left as it is. Values pass through.
 *
 * Subscribing starts the message (`message.begin()`: its consumer timeout
 * counts from now); a message that `begin()` refuses (settled, given back,
 * superseded by a redelivery, its subscription stopping) is skipped: the
 * source is not subscribed and the result completes at once. Unsubscribed
 * before the source ended (a `switchMap` that moved on, a `takeUntil`), it
 * gives the message back: delivered again, no failure counted. Accepts any
 * settleable: a window or pair settles each of its messages.
 *
 * ## Example
 * ```ts
 * import { defer, mergeMap } from 'rxjs'
 * import { ackOnComplete } from 'rx-redis-streams/operators'
 * messages$.pipe(mergeMap((msg) => defer(() => handle(msg)).pipe(ackOnComplete(msg)), 10))
 * ```
 * @param message the message (or window, or pair) to settle
 * @returns an operator that acks on completion, nacks on error, gives back on unsubscribe
 */
export function ackOnComplete<T>(message: Settleable): MonoTypeOperatorFunction<T> {
  return (source) =>
    new Observable<T>((subscriber) => {
      if (!beginAttempt(message)) {
        subscriber.complete()
        return
      }
      let ended = false
      const subscription = source.subscribe({
        next: (value) => subscriber.next(value),
        error: (error: unknown) => {
          ended = true
          void settleQuietly(() => (isPermanentError(error) ? message.deadLetter(error) : message.nack(error)))
          subscriber.complete()
        },
        complete: () => {
          ended = true
          void settleQuietly(() => message.ack())
          subscriber.complete()
        },
      })
      return () => {
        subscription.unsubscribe()
        // Cancelled before it ended: nobody will settle it here, so it goes back for another run.
        if (!ended && message.outcome === undefined) giveBack(message)
      }
    })
}
