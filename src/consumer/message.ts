import type { Event } from '../event.js'
import type { Settleable } from '../settle.js'

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
 * @example
 * ```ts
 * events.topic('orders').consume({ group: 'billing' }).subscribe(async (msg) => {
 *   try { await bill(msg.event.payload); await msg.ack() }
 *   catch (err) { await msg.nack(err) }   // redelivered after the backoff, DLQ when out of retries
 * })
 * ```
 */
export interface Message<P = unknown> extends Settleable {
  readonly event: Event<P>
  /** The entry id in the topic stream, e.g. `1718000000000-0`. */
  readonly streamId: string
  readonly topic: string
  readonly group: string
  readonly consumer: string
  /** 1 on the first delivery; grows with each redelivery (nack, crash, claim). */
  readonly deliveryCount: number
  /** Deliveries allowed before the dead letter queue: `maxRetries + 1`. */
  readonly maxDeliveries: number
  readonly retry: RetryDefaults
  /**
   * Holds the message past `consumerTimeout`, until `untilMs` (epoch ms; `Infinity`
   * for as long as needed). Windows and joins use it for the messages they hold.
   * Leases keep being renewed while the message is unsettled.
   */
  holdUntil(untilMs: number): void
  /** The same delivery (same settlement) carrying a decoded payload. */
  withPayload<A>(payload: A): Message<A>
}

/**
 * Gives back an unsettled message that will not be handled here (e.g. queued in
 * `handleEach` when the subscription is closed): it leaves the subscription's
 * credit without being settled, stays pending in its group, and is delivered
 * again later (restart or claim). Shutdown then need not wait for it.
 */
export const releaseMessage: unique symbol = Symbol.for('rx-redis-streams.releaseMessage')

/** Releases a message not yet handled, if it supports it (see {@link releaseMessage}). */
export function releaseUnhandled(message: unknown): void {
  if (message === null || typeof message !== 'object') return
  const release = (message as { [releaseMessage]?: unknown })[releaseMessage]
  if (typeof release === 'function') (release as () => void).call(message)
}

/** True on an unsettled message whose subscription is shutting down: it should not be started (see {@link isWithdrawn}). */
export const messageWithdrawn: unique symbol = Symbol.for('rx-redis-streams.messageWithdrawn')

/** Whether a message was withdrawn by its stopping subscription: handling it now would only race the shutdown. */
export function isWithdrawn(message: unknown): boolean {
  if (message === null || typeof message !== 'object') return false
  return (message as { [messageWithdrawn]?: unknown })[messageWithdrawn] === true
}
