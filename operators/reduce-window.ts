import { map, type OperatorFunction } from 'rxjs'
import { CompositeSettleable } from '../src/shared-settlement.js'
import { isSettleable, type NackOptions, type Outcome, type Settleable } from '../src/settle.js'
import type { Window, WindowResult } from './window-types.js'

class ReducedWindow<R, T> implements WindowResult<R, T> {
  readonly kind = 'windowResult' as const
  readonly key: string
  readonly start: number
  readonly end: number
  readonly early: boolean
  readonly partial: boolean
  readonly value: R
  readonly window: Window<T>

  constructor(window: Window<T>, value: R) {
    this.key = window.key
    this.start = window.start
    this.end = window.end
    this.early = window.early
    this.partial = window.partial
    this.value = value
    this.window = window
  }

  get outcome(): Outcome | undefined {
    return this.window.outcome
  }

  /** The messages the result settles: the window's. */
  get constituents(): readonly Settleable[] {
    return this.window instanceof CompositeSettleable ? this.window.constituents : (this.window.messages as readonly unknown[]).filter(isSettleable)
  }

  ack(): Promise<Outcome> {
    return this.window.ack()
  }

  nack(error: unknown, options?: NackOptions): Promise<Outcome> {
    return this.window.nack(error, options)
  }

  deadLetter(reason: unknown): Promise<Outcome> {
    return this.window.deadLetter(reason)
  }
}

/**
 * Reduces each window's messages to one value, keeping the result
 * settleable: settling it settles the window (and so its messages). The
 * accumulator starts from `seed` for every window; return a new value rather
 * than mutating the seed.
 *
 * ## Example
 * ```ts
 * import { windowTumbling, reduceWindow, handleEach } from 'rx-redis-streams/operators'
 * orders$.pipe(
 *   windowTumbling(60_000, { key: (m) => m.event.payload.shop }),
 *   reduceWindow((total, msg) => total + msg.event.payload.amount, 0),
 *   handleEach((r) => saveRevenue(r.key, r.start, r.value)),
 * ).subscribe()
 * ```
 * @param accumulator folds one message into the accumulated value (with its index in the window)
 * @param seed the initial value of every window
 * @returns an operator from windows to `{ key, start, end, early, value, window }` results
 */
export function reduceWindow<T, R>(
  accumulator: (accumulated: R, message: T, index: number) => R,
  seed: R,
): OperatorFunction<Window<T>, WindowResult<R, T>> {
  return map((window) => new ReducedWindow(window, window.messages.reduce(accumulator, seed)))
}
