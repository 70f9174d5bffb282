import { EMPTY, map, retry, takeWhile, throwError, timer, type MonoTypeOperatorFunction, type SchedulerLike } from 'rxjs'
import { isPermanentError } from '../src/errors.js'
import type { Settleable } from '../src/settle.js'
import { beginAttempt, holdForLater, releaseHeld } from './handle-each.js'

/** Options of {@link retryWithBackoff}. */
export interface RetryWithBackoffConfig {
  /** Retries after the first failure (so at most `maxRetries + 1` attempts). Default 3 (`EVENT_MAX_RETRIES`). */
  readonly maxRetries?: number
  /** Delay before the first retry, ms. Default 1000 (`EVENT_RETRY_BACKOFF`). */
  readonly initialDelay?: number
  /** Upper bound of any delay, ms. Default 60 000. */
  readonly maxDelay?: number
  /** Growth factor per retry. Default 2. */
  readonly multiplier?: number
  /** Random spread as a fraction of the delay (0.2 = ±20 %). Default 0.1, or 0 when a `scheduler` is passed (virtual time is exact). */
  readonly jitter?: number
  /** Whether an error is worth retrying. Default: every error except bad input (DecodeError and the like). */
  readonly shouldRetry?: (error: unknown) => boolean
  /** Reset the retry count after a successful value. Default false. */
  readonly resetOnSuccess?: boolean
  /** Scheduler for the delays (tests pass a TestScheduler or the `VirtualClock` of `rx-redis-streams/testing`); jitter then defaults to 0. */
  readonly scheduler?: SchedulerLike
  /**
   * The message (or window, or pair) being retried, when the retries run inside
   * its handling (`defer(work).pipe(retryWithBackoff({ message: msg }), toDeadLetter(msg), ackOnComplete(msg))`):
   * its consumer timeout is paused during each backoff and restarted
   * (`begin()`) at each retry, so the timeout bounds each attempt; a message
   * that `begin()` refuses (its attempt timed out, it was given back, its
   * subscription is stopping) ends the retries: the result completes.
   */
  readonly message?: Settleable
}

/** The delay before retry number `retryIndex` (1-based), before jitter. */
export function backoffDelay(retryIndex: number, initialDelay: number, multiplier: number, maxDelay: number): number {
  return Math.min(maxDelay, initialDelay * multiplier ** (retryIndex - 1))
}

/**
 * Re-subscribes to the source after an error, with exponential delays
 * (`initialDelay * multiplier^(n-1)`, capped by `maxDelay`, with jitter), up to
 * `maxRetries` times; then the error goes on. Errors that `shouldRetry`
 * refuses go on at once.
 *
 * ## Example
 * ```ts
 * import { defer } from 'rxjs'
 * import { retryWithBackoff } from 'rx-redis-streams/operators'
 * defer(() => callFlakyService()).pipe(retryWithBackoff({ maxRetries: 3, initialDelay: 1_000 }))
 * ```
 * @param config retry count, delays and the retry predicate
 * @returns an operator that retries the source
 */
export function retryWithBackoff<T>(config: RetryWithBackoffConfig = {}): MonoTypeOperatorFunction<T> {
  const policy = retryPolicy(config)
  return retry<T>({
    count: policy.maxRetries,
    resetOnSuccess: config.resetOnSuccess ?? false,
    delay: (error: unknown, retryIndex: number) => {
      if (!policy.shouldRetry(error)) return throwError(() => error)
      const delay = policy.delayFor(retryIndex)
      const wait = config.scheduler === undefined ? timer(delay) : timer(delay, config.scheduler)
      const message = config.message
      if (message === undefined) return wait
      if (message.outcome !== undefined) return EMPTY
      holdForLater(message)
      return wait.pipe(
        map((tick) => {
          releaseHeld(message, config.scheduler?.now() ?? Date.now())
          return tick
        }),
        takeWhileStarted(message),
      )
    },
  })
}

/** Lets the retry go on only when the message can be started again (`begin()`); otherwise completes. */
function takeWhileStarted<T>(message: Settleable): MonoTypeOperatorFunction<T> {
  return (source) => source.pipe(takeWhile(() => beginAttempt(message)))
}

/** A retry configuration with its defaults applied. */
export interface RetryPolicy {
  readonly maxRetries: number
  readonly shouldRetry: (error: unknown) => boolean
  /** The delay before retry number `retryIndex` (1-based), jitter included. */
  readonly delayFor: (retryIndex: number) => number
}

/** Applies the defaults of {@link RetryWithBackoffConfig} (shared by `retryWithBackoff` and `handleEach`). */
export function retryPolicy(config: RetryWithBackoffConfig): RetryPolicy {
  const initialDelay = config.initialDelay ?? 1_000
  const maxDelay = config.maxDelay ?? 60_000
  const multiplier = config.multiplier ?? 2
  const jitter = config.jitter ?? (config.scheduler === undefined ? 0.1 : 0)
  return {
    maxRetries: config.maxRetries ?? 3,
    shouldRetry: config.shouldRetry ?? ((error: unknown) => !isPermanentError(error)),
    delayFor: (retryIndex) => {
      const base = backoffDelay(retryIndex, initialDelay, multiplier, maxDelay)
      return jitter > 0 ? Math.max(0, base * (1 + jitter * (Math.random() * 2 - 1))) : base
    },
  }
}
