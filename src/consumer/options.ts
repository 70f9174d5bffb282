import type { StartFrom } from '../backend/types.js'
import type { Config } from '../config/types.js'
import { MAX_TIMER_MS } from './timers.js'

/**
 * Options of `topic(name).consume(options)`. Every numeric option defaults to
 * the Config (the `EVENT_*` variables). Each is validated when `consume()` is
 * called: a value out of range throws a `RangeError` naming the option.
 *
 * | option | range | 0 means |
 * |---|---|---|
 * | `batchSize` | integer ≥ 1 | — |
 * | `maxPendingMessages` | integer ≥ 1 | — |
 * | `blockMs` | integer 1 … 2^31−1 | not allowed (it would spin) |
 * | `consumerTimeout` | 1 … 2^31−1 ms | — |
 * | `drainTimeout` | 0 … 2^31−1 ms | do not wait for started messages |
 * | `claimMinIdleTime` | 1 … 2^31−1 ms | — |
 * | `claimInterval` | 0 … 2^31−1 ms | claiming off |
 * | `maxGiveBacks` | integer ≥ 1 | — |
 * | `maxConnectAttempts` | integer ≥ 1 | — (unset: never give up) |
 */
export interface ConsumeOptions {
  /** The consumer group: every group receives every event. */
  readonly group: string
  /**
   * A stable consumer name; a restarted consumer with the same name first receives its own
   * pending messages. Default: host-pid-random, chosen once per `consume()` call (so `retry()`
   * on the pipeline reuses it). Two live subscriptions of one process may not share a name
   * (`ConsumerNameInUseError`).
   */
  readonly consumer?: string
  /**
   * Most entries per blocking read (XREADGROUP COUNT). With a backlog and free credit, a read-ahead round's reads
   * ask for max(batchSize, 50) each (see `maxPendingMessages`).
   */
  readonly batchSize?: number
  /**
   * Most unsettled messages at any time (the credit): memory stays bounded whatever the
   * backlog. Unset (here and in `EVENT_MAX_PENDING_MESSAGES`), the credit follows demand:
   * what the operators downstream declare they hold at once (`handleEach`'s concurrency, a
   * window's `maxOpenMessages`) plus 8 × max(`batchSize`, 50) of read-ahead (two rounds: the one
   * being delivered and the next, sent before it is delivered); when nothing downstream declares a
   * demand, 4 × `batchSize`. A consumer draining a backlog holds up to its whole credit: set this to
   * bound what one consumer of a group takes at once.
   * Recovered messages (own pending entries re-read on restart, claimed entries) come in a
   * slow start: one at first, then twice as many with every round that did not crash the
   * process.
   */
  readonly maxPendingMessages?: number
  /** How long one read blocks waiting for new entries, in ms (≥ 1). Default 2000. */
  readonly blockMs?: number
  /**
   * Bounds each handler attempt (from `begin()`; paused by `holdUntil(Infinity)`): an attempt
   * running longer is failed (its `signal` aborts, the message is nacked). A message emitted
   * and not started within it, while later messages were started or nothing was started, is
   * given back without counting a delivery (one waiting in an in-order queue that makes
   * progress keeps its lease).
   */
  readonly consumerTimeout?: number
  /** Where a new group starts: `beginning` (retained history, default) or `latest`. */
  readonly startFrom?: StartFrom
  /** On stop, how long (ms) to wait for started messages to settle. Default: min(consumerTimeout, 10 s). */
  readonly drainTimeout?: number
  /** Claim entries idle this long (ms) from other consumers. */
  readonly claimMinIdleTime?: number
  /** How often (ms) to look for idle entries to claim; 0 disables claiming. */
  readonly claimInterval?: number
  /** An entry given back this many times without any consumer starting it goes to the DLQ (`never_started`). Default 3. */
  readonly maxGiveBacks?: number
  /**
   * Give up after this many consecutive failed reads (or group checks) whose error has
   * `kind: 'connection'` (a `ConnectionError`: refused, unknown host, TLS or auth failure):
   * the `consume()` Observable errors with that error and `health()` shows the subscription
   * `errored`. A successful read, or a failure of another kind (a timeout), resets the count.
   * Default: never (the subscription keeps retrying, state `reconnecting`, and logs each
   * failed read as a warning).
   *
   * ## Example
   * ```ts
   * // A worker that should exit when Redis cannot be reached for ~10 tries:
   * events.topic('orders').consume({ group: 'billing', maxConnectAttempts: 10 })
   *   .subscribe({ next: (m) => void handle(m), error: (e) => { console.error(e); process.exit(1) } })
   * ```
   */
  readonly maxConnectAttempts?: number
  /** A graceful stop: when it aborts, the subscription stops pulling, drains, flushes acks and completes. */
  readonly signal?: AbortSignal
  /** A graceful stop when this promise settles (as `signal`). */
  readonly until?: PromiseLike<unknown>
}

/** The numeric consume options with their ranges (see {@link ConsumeOptions}). */
const RANGES: readonly (readonly [keyof ConsumeOptions, number, number, boolean])[] = [
  ['batchSize', 1, Number.MAX_SAFE_INTEGER, true],
  ['maxPendingMessages', 1, Number.MAX_SAFE_INTEGER, true],
  ['blockMs', 1, MAX_TIMER_MS, true],
  ['consumerTimeout', 1, MAX_TIMER_MS, false],
  ['drainTimeout', 0, MAX_TIMER_MS, false],
  ['claimMinIdleTime', 1, MAX_TIMER_MS, false],
  ['claimInterval', 0, MAX_TIMER_MS, false],
  ['maxGiveBacks', 1, 1_000_000, true],
  ['maxConnectAttempts', 1, Number.MAX_SAFE_INTEGER, true],
]

/**
 * Checks every numeric option of `consume()`/`subscribe()`.
 *
 * @throws {RangeError} naming the first option out of range
 */
export function validateConsumeOptions(options: ConsumeOptions): void {
  const o = options as unknown as Record<string, unknown>
  for (const [key, min, max, integer] of RANGES) {
    const v = o[key]
    if (v === undefined) continue
    if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < min || v > max) {
      const kind = integer ? 'an integer' : 'a number'
      throw new RangeError(`${key} must be ${kind} from ${String(min)} to ${String(max)}, got ${typeof v === 'number' ? String(v) : typeof v}`)
    }
  }
}

/** The resolved settings of one subscription. */
export interface ResolvedOptions {
  readonly batchSize: number
  /** The user's credit, or undefined when the credit follows demand. */
  readonly maxPending: number | undefined
  readonly blockMs: number
  readonly consumerTimeoutMs: number
  readonly drainTimeoutMs: number
  readonly claimMinIdleMs: number
  readonly claimIntervalMs: number
  readonly startFrom: StartFrom
  readonly maxGiveBacks: number
  /** Consecutive connection failures of the pull loop before it gives up; Infinity = never. */
  readonly maxConnectAttempts: number
}

/** The Config's default credit: a Config holding another value (or the variable set) counts as "set by the user". */
const DEFAULT_MAX_PENDING = 1_000

/** Defaults from the Config. */
export function resolveOptions(options: ConsumeOptions, c: Config): ResolvedOptions {
  const consumerTimeoutMs = options.consumerTimeout ?? c.consumerTimeoutMs
  const userCredit =
    options.maxPendingMessages ??
    (c.maxPendingMessages !== DEFAULT_MAX_PENDING || process.env['EVENT_MAX_PENDING_MESSAGES'] !== undefined ? c.maxPendingMessages : undefined)
  return {
    batchSize: options.batchSize ?? c.batchSize,
    maxPending: userCredit,
    blockMs: options.blockMs ?? 2_000,
    consumerTimeoutMs,
    drainTimeoutMs: options.drainTimeout ?? Math.min(consumerTimeoutMs, 10_000),
    claimMinIdleMs: options.claimMinIdleTime ?? c.claimMinIdleTimeMs,
    claimIntervalMs: options.claimInterval ?? c.claimIntervalMs,
    startFrom: options.startFrom ?? 'beginning',
    maxGiveBacks: options.maxGiveBacks ?? 3,
    maxConnectAttempts: options.maxConnectAttempts ?? Number.POSITIVE_INFINITY,
  }
}

/**
 * The ioredis settings the engine wants for the blocking reader's connection
 * (XREADGROUP): a command cut by a reconnect is NOT re-sent
 * (`autoResendUnfulfilledCommands: false`) and fails at once when offline
 * (`enableOfflineQueue: false` is not needed: one retry per request).
 * Why: a re-sent `XREADGROUP >` whose first execution delivered entries whose
 * reply was lost would hide the failure, and those entries would sit unseen
 * in this consumer's pending list until claimed (a delivery counted for
 * nothing). Failing the read instead makes the engine re-read its own pending
 * entries after the last id it saw, so they come back with one delivery
 * counted. For the command connection, a re-sent XAUTOCLAIM is harmless (the
 * entries it already claimed are no longer idle), but a re-sent redelivery
 * (XCLAIM) counts a delivery twice: the engine's guarantee is "delivery counts
 * may over-count by one per reconnect, never under-count".
 */
export const CONSUMER_READER_CLIENT_SETTINGS = {
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 1,
} as const
