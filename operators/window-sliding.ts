import type { OperatorFunction } from 'rxjs'
import type { Settleable } from '../src/settle.js'
import { fixedWindows, requirePositive, windowOperator } from './internal/window-engine.js'
import type { LatePolicy, Timestamped, Late, Window, WindowOptions, WindowOutput } from './window-types.js'

/**
 * Options of {@link windowSliding}: every field is described on
 * {@link WindowOptions} (`key`, `timestamp`, `grace`, `maxMessages`,
 * `maxOpenMessages`, `idleTimeout`, `late`, `scheduler`).
 */
export type WindowSlidingOptions<T, L extends LatePolicy = 'deadLetter'> = WindowOptions<T, L>

/**
 * Groups messages into overlapping (hopping) event-time windows of `size` ms
 * starting every `advance` ms (`[k·advance, k·advance + size)`, aligned on the
 * epoch), per key, and emits each window when stream time reaches its
 * `end + grace`, in window order per key. A message belongs to
 * `size / advance` windows: it is acked only when every window holding it is
 * acked (the first window to fail it nacks or dead-letters it at once). An
 * event is late only when all its windows have closed; if only some have, it
 * joins the open ones. A window holds each stream entry once: a redelivered
 * copy replaces the one it holds. An early window (`maxMessages`) comes out
 * after the older open windows of its key, which are then emitted early too.
 * After a restart, a replayed message whose windows were all emitted and
 * settled is acked, and one is never re-emitted in a settled window (the state
 * is kept in the store per group and `name`). Per-key windows need one
 * consumer per key (see `key`).
 *
 * ## Example
 * ```ts
 * import { windowSliding, reduceWindow, handleEach } from 'rx-redis-streams/operators'
 * // the error count of the last 5 minutes, every minute
 * errors$.pipe(
 *   windowSliding(5 * 60_000, 60_000, { idleTimeout: 30_000, maxOpenMessages: 1_000 }),
 *   reduceWindow((n) => n + 1, 0),
 *   handleEach((w) => alertWhen(w.value > 100, w.start, w.end)),
 * ).subscribe()
 * ```
 * @param size window length in ms
 * @param advance distance between window starts in ms, at most `size` (equal: tumbling windows)
 * @param options per-key windows, event time, grace, limits, idle advancement, late policy
 * @returns an operator from messages to windows (and {@link Late} events with `late: 'emit'`)
 */
export function windowSliding<T extends Settleable, L extends LatePolicy = 'deadLetter'>(
  size: number,
  advance: number,
  options: WindowSlidingOptions<T, L> & { readonly timestamp: (value: T) => number },
): OperatorFunction<T, WindowOutput<T, L>>
export function windowSliding<T extends Timestamped, L extends LatePolicy = 'deadLetter'>(
  size: number,
  advance: number,
  options?: WindowSlidingOptions<T, L>,
): OperatorFunction<T, WindowOutput<T, L>>
export function windowSliding<T extends Settleable>(
  size: number,
  advance: number,
  options: WindowSlidingOptions<T, LatePolicy> = {},
): OperatorFunction<T, Window<T> | Late<T>> {
  requirePositive('size', size)
  requirePositive('advance', advance)
  if (advance > size) throw new RangeError(`advance (${advance}) must not exceed size (${size})`)
  return windowOperator(options, fixedWindows<T>(size, advance), `sliding-${size}-${advance}-${options.grace ?? 0}`)
}
