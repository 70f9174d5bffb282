/**
 * How a settlement call ended. The first recorded settlement wins.
 * - `acked`, `nacked`, `dead-lettered`: recorded.
 * - `withdrawn`: the message was given back (not started within `consumerTimeout`, its
 *   subscription stopped, or superseded by a redelivery); nothing was recorded, and a
 *   library operator never runs it.
 * - `failed`: the store failed (e.g. the XACK or the dead-letter move failed); NOT recorded
 *   as the outcome (a later settlement may retry), the entry stays pending.
 * Settlement promises never reject.
 */
export type Outcome = 'acked' | 'nacked' | 'dead-lettered' | 'withdrawn' | 'failed'

/** Options of a negative acknowledgement. */
export interface NackOptions {
  /** Redeliver after this many ms instead of the configured retry backoff. */
  readonly delay?: number
}

/**
 * Anything that can be settled: a {@link Message}, a window of messages, a
 * joined pair. Settlement is idempotent: the first call wins, later calls
 * resolve to the first outcome and do nothing.
 *
 * @example
 * ```ts
 * import type { Settleable } from 'rx-redis-streams'
 * async function finish(s: Settleable, ok: boolean) {
 *   return ok ? s.ack() : s.nack(new Error('try again'))
 * }
 * ```
 */
export interface Settleable {
  /** Acknowledges: the work is done. */
  ack(): Promise<Outcome>
  /** Fails this attempt: redelivered after the backoff, or dead-lettered once out of deliveries. */
  nack(error: unknown, options?: NackOptions): Promise<Outcome>
  /** Moves to the dead letter queue at once (and acks), with the reason. */
  deadLetter(reason: unknown): Promise<Outcome>
  /** The outcome once settled, else undefined. */
  readonly outcome: Outcome | undefined
}

/** True for values with `ack`, `nack` and `deadLetter` methods. */
export function isSettleable(value: unknown): value is Settleable {
  if (value === null || typeof value !== 'object') return false
  const v = value as Record<string, unknown>
  return typeof v['ack'] === 'function' && typeof v['nack'] === 'function' && typeof v['deadLetter'] === 'function'
}

/** `JSON.stringify`, typed honestly: undefined for `undefined`, functions and symbols. */
const stringifyJson: (value: unknown) => string | undefined = JSON.stringify

/** The text of an error or reason, for logs and dead letters (capped in length). */
export function reasonText(reason: unknown, max = 1_000): string {
  let text: string
  if (reason instanceof Error) text = reason.message || reason.name
  else if (typeof reason === 'string') text = reason
  else {
    try {
      text = stringifyJson(reason) ?? String(reason)
    } catch {
      text = String(reason)
    }
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text
}
