import type { OperatorFunction } from 'rxjs'
import type { Settleable } from '../src/settle.js'
import { fixedWindows, requirePositive, windowOperator } from './internal/window-engine.js'
import type { LatePolicy, Timestamped, Late, Window, WindowOptions, WindowOutput } from './window-types.js'

/**
 * Options of {@link windowTumbling}: every field is described on
 * {@link WindowOptions} (`key`, `timestamp`, `grace`, `maxMessages`,
 * `maxOpenMessages`, `idleTimeout`, `late`, `scheduler`).
 */
export type WindowTumblingOptions<T, L extends LatePolicy = 'deadLetter'> = WindowOptions<T, L>

/**
 * Groups messages into fixed, non-overlapping event-time windows of `size` ms
 * (`[k·size, (k+1)·size)`, aligned on the epoch), per key, and emits each
 * window when stream time (the largest event time seen) reaches its
 * `end + grace`. Windows of a key come out in window order. The messages stay
 * unsettled while their window is open, so a crash replays them; settle the
 * emitted window to settle them all. When the source completes every open
 * window is emitted, flagged `partial`; on a graceful stop (`close()`) the
 * open windows give their messages back unemitted, to be replayed whole; on
 * error or unsubscribe nothing is settled. Which windows were emitted and
 * settled is remembered in the store per group and `name`, so a restart
 * neither re-emits a settled window nor emits one with part of its messages.
 * Per-key windows need one consumer per key (see `key`).
 *
 * ## Example
 * ```ts
 * import { windowTumbling, reduceWindow, handleEach } from 'rx-redis-streams/operators'
 * events.topic('clicks').consume({ group: 'per-minute', maxPendingMessages: 5_000 }).pipe(
 *   windowTumbling(60_000, { key: (m) => m.event.headers['page'] ?? '', grace: 5_000, idleTimeout: 10_000, maxOpenMessages: 5_000 }),
 *   reduceWindow((count) => count + 1, 0),
 *   handleEach((w) => saveCount(w.key, w.start, w.value)),   // acks every click of the window
 * ).subscribe()
 * ```
 * @param size window length in ms
 * @param options per-key windows, event time, grace, limits, idle advancement, late policy
 * @returns an operator from messages to windows (and {@link Late} events with `late: 'emit'`)
 */
export function windowTumbling<T extends Settleable, L extends LatePolicy = 'deadLetter'>(
  size: number,
  options: WindowTumblingOptions<T, L> & { readonly timestamp: (value: T) => number },
): OperatorFunction<T, WindowOutput<T, L>>
export function windowTumbling<T extends Timestamped, L extends LatePolicy = 'deadLetter'>(
  size: number,
  options?: WindowTumblingOptions<T, L>,
): OperatorFunction<T, WindowOutput<T, L>>
export function windowTumbling<T extends Settleable>(
  size: number,
  options: WindowTumblingOptions<T, LatePolicy> = {},
): OperatorFunction<T, Window<T> | Late<T>> {
  requirePositive('size', size)
  return windowOperator(options, fixedWindows<T>(size, size), `tumbling-${size}-${options.grace ?? 0}`)
}
