import * as t from 'io-ts'

const UNIT_MS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1_000, ms: 1 } as const

/** Units from largest to smallest; a duration lists each at most once, in this order. */
const DURATION_PATTERN = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$/

/**
 * What a valid duration looks like, for error messages.
 *
 * ## Example
 * ```ts
 * import { DURATION_HINT } from 'rx-redis-streams'
 * throw new Error(`timeout must be ${DURATION_HINT}`)
 * ```
 */
export const DURATION_HINT = 'a duration such as 250ms, 30s, 5m, 24h or 1h30m (units d, h, m, s, ms)'

/**
 * Parses a duration such as `250ms`, `30s`, `5m`, `24h`, `1h30m` or
 * `1m30s500ms` into milliseconds. Units `d`, `h`, `m`, `s`, `ms`, each at most
 * once and from largest to smallest, with whole non-negative numbers. A bare
 * `0` is zero (as in `EVENT_CLAIM_INTERVAL=0`); any other bare number has no
 * unit and is refused.
 *
 * ## Example
 * ```ts
 * import { parseDuration } from 'rx-redis-streams'
 * parseDuration('1h30m')     // 5_400_000
 * parseDuration('5 minutes') // undefined
 * ```
 * @param text the duration text
 * @returns milliseconds, or undefined when `text` is not a duration
 */
export function parseDuration(text: string): number | undefined {
  if (text.length === 0) return undefined
  if (text === '0') return 0
  const match = DURATION_PATTERN.exec(text)
  if (match === null) return undefined
  const [, d, h, m, s, ms] = match
  let total = 0
  for (const [digits, unit] of [[d, UNIT_MS.d], [h, UNIT_MS.h], [m, UNIT_MS.m], [s, UNIT_MS.s], [ms, UNIT_MS.ms]] as const) {
    if (digits !== undefined) total += Number(digits) * unit
  }
  return Number.isSafeInteger(total) ? total : undefined
}

/**
 * Formats milliseconds as the shortest duration text that {@link parseDuration}
 * reads back, e.g. `5400000` → `1h30m`.
 *
 * ## Example
 * ```ts
 * import { formatDuration } from 'rx-redis-streams'
 * formatDuration(90_500) // '1m30s500ms'
 * ```
 * @param ms a non-negative whole number of milliseconds
 * @returns the duration text (`0ms` for zero)
 */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0) throw new RangeError(`not a duration in milliseconds: ${ms}`)
  if (ms === 0) return '0ms'
  let rest = ms
  let text = ''
  for (const unit of ['d', 'h', 'm', 's', 'ms'] as const) {
    const size = UNIT_MS[unit]
    const count = Math.floor(rest / size)
    if (count > 0) {
      text += `${count}${unit}`
      rest -= count * size
    }
  }
  return text
}

/**
 * An io-ts codec from duration text (`30s`, `5m`, `1h30m`...) to milliseconds,
 * in the manner of `NumberFromString` of io-ts-types. Encodes back to text.
 *
 * ## Example
 * ```ts
 * import { Duration } from 'rx-redis-streams'
 * Duration.decode('250ms') // right(250)
 * Duration.decode('10')    // left: no unit
 * Duration.encode(90_000)  // '1m30s'
 * ```
 */
export const Duration = new t.Type<number, string, unknown>(
  'Duration',
  (u): u is number => typeof u === 'number' && Number.isSafeInteger(u) && u >= 0,
  (u, c) => {
    if (typeof u !== 'string') return t.failure(u, c, `must be ${DURATION_HINT}`)
    const ms = parseDuration(u)
    return ms === undefined ? t.failure(u, c, `must be ${DURATION_HINT}`) : t.success(ms)
  },
  formatDuration,
)

/**
 * The type of {@link Duration}: milliseconds.
 *
 * ## Example
 * ```ts
 * import type { Duration } from 'rx-redis-streams'
 * const timeout: Duration = 30_000
 * ```
 */
export type Duration = t.TypeOf<typeof Duration>

/**
 * A duration given either as duration text (see {@link Duration}) or as a whole
 * number of milliseconds, as the options object accepts it.
 *
 * ## Example
 * ```ts
 * import { DurationInput } from 'rx-redis-streams'
 * DurationInput.decode(1_500)  // right(1500)
 * DurationInput.decode('1.5s') // left: whole numbers only
 * ```
 */
export const DurationInput = new t.Type<number, string, unknown>(
  'DurationInput',
  Duration.is,
  (u, c) => {
    if (typeof u === 'number') {
      return Number.isSafeInteger(u) && u >= 0 ? t.success(u) : t.failure(u, c, 'must be a whole, non-negative number of milliseconds')
    }
    return Duration.validate(u, c)
  },
  formatDuration,
)

/**
 * A {@link DurationInput} longer than zero: timeouts and intervals.
 *
 * ## Example
 * ```ts
 * import { PositiveDurationInput } from 'rx-redis-streams'
 * PositiveDurationInput.decode('30s') // right(30000)
 * PositiveDurationInput.decode('0s')  // left
 * ```
 */
export const PositiveDurationInput = new t.Type<number, string, unknown>(
  'PositiveDurationInput',
  (u): u is number => DurationInput.is(u) && u > 0,
  (u, c) => {
    const result = DurationInput.validate(u, c)
    if (result._tag === 'Left') return result
    return result.right > 0 ? result : t.failure(u, c, 'must be longer than 0ms')
  },
  formatDuration,
)
