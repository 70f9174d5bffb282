import { filter, type MonoTypeOperatorFunction } from 'rxjs'
import type { Settleable } from '../src/settle.js'
import { Share } from '../src/shared-settlement.js'
import { settleQuietly } from './handle-each.js'

/** Options of {@link filterMessages}. */
export interface FilterMessagesOptions {
  /**
   * What happens to a message the predicate drops: `ack` (default: this group
   * is done with it) or `leave` (another branch or operator settles it).
   */
  readonly onDrop?: 'ack' | 'leave'
}

/**
 * RxJS `filter` for messages: lets through the messages for which `predicate`
 * returns true, and settles the others (acks them: this group is done with
 * them) instead of leaving them to time out. A plain `filter` drops messages
 * unsettled: each is given back after `consumerTimeout` and delivered again,
 * to no avail. Behind `share()`, a dropped message is released as one
 * holder's share: while a window or join of another branch holds it, the
 * entry is acked only once that holder settles too.
 *
 * ## Example
 * ```ts
 * import { filterMessages, handleEach } from 'rx-redis-streams/operators'
 * events.topic('orders').consume({ group: 'eu-billing' }).pipe(
 *   filterMessages((msg) => msg.event.headers['region'] === 'eu'),   // the others are acked
 *   handleEach(bill),
 * ).subscribe()
 * ```
 * @param predicate true to keep a message
 * @param options what to do with a dropped message
 * @returns an operator that filters messages and settles what it drops
 */
export function filterMessages<T extends Settleable>(predicate: (message: T, index: number) => boolean, options: FilterMessagesOptions = {}): MonoTypeOperatorFunction<T> {
  const ackDropped = (options.onDrop ?? 'ack') === 'ack'
  return filter((message, index) => {
    if (predicate(message, index)) return true
    if (ackDropped) void settleQuietly(() => new Share(message).ack())
    return false
  })
}
