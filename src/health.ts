/**
 * The health of an event manager: is the store reachable (PING round trip,
 * raced against a timeout: a health check never hangs), what each
 * subscription is doing, and whether its background workers are alive.
 */
import type { StreamBackend } from './backend/types.js'
import type { SubscriptionStatus } from './consumer/subscription.js'
import { EventSystemError } from './errors.js'
import { reasonText } from './settle.js'

/**
 * Options of a health check.
 *
 * @example
 * ```ts
 * await events.health({ timeoutMs: 500 })
 * ```
 */
export interface HealthOptions {
  /** How long to wait for PING, ms. Default 2 000 (the manager's `healthTimeout`). */
  readonly timeoutMs?: number
}

/**
 * The store's part of a health report.
 *
 * @example
 * ```ts
 * const { redis } = await events.health()
 * console.log(redis.reachable ? `PING ${String(redis.latencyMs)} ms` : redis.error)
 * ```
 */
export interface BackendHealth {
  /** `redis` or `memory`. */
  readonly kind: string
  readonly reachable: boolean
  /** PING round trip in ms; null when it failed or timed out. */
  readonly latencyMs: number | null
  /** Why it is not reachable. */
  readonly error?: string
}

/**
 * One subscription (one consumer of a group) in a health report.
 *
 * @example
 * ```ts
 * for (const s of (await events.health()).subscriptions) console.log(s.topic, s.group, s.state, s.lastReadAgoMs)
 * ```
 */
export interface SubscriptionHealth extends SubscriptionStatus {
  /** Milliseconds since its last successful read; null before the first. */
  readonly lastReadAgoMs: number | null
}

/**
 * One delayed-event promoter in a health report.
 *
 * @example
 * ```ts
 * for (const p of (await events.health()).promoters) console.log(p.topic, p.alive, p.lastRunAt)
 * ```
 */
export interface PromoterHealth {
  readonly topic: string
  readonly alive: boolean
  /** When it last completed a pass, ms since the epoch. */
  readonly lastRunAt: number | null
}

/**
 * The result of `health()`: `ok`, and the reasons when it is not.
 *
 * @example
 * ```ts
 * const report = await events.health()
 * if (!report.ok) logger.warn({ reasons: report.reasons }, 'event system unhealthy')
 * ```
 */
export interface HealthReport {
  readonly ok: boolean
  /** Human-readable reasons for `ok: false`; empty when ok. */
  readonly reasons: readonly string[]
  /** When the check ran, ms since the epoch. */
  readonly checkedAt: number
  readonly redis: BackendHealth
  readonly subscriptions: readonly SubscriptionHealth[]
  readonly promoters: readonly PromoterHealth[]
}

/**
 * What a health check reads from an event manager.
 *
 * @example
 * ```ts
 * await checkHealth({ backend, closed: false, promoterIntervalMs: 1_000, subscriptions: () => [], promoters: () => [] })
 * ```
 */
export interface HealthSource {
  readonly backend: StreamBackend
  readonly closed: boolean
  /** How often promoters run, ms: one that has not completed a pass for much longer is stuck. */
  readonly promoterIntervalMs: number
  subscriptions(): readonly SubscriptionStatus[]
  promoters(): readonly PromoterHealth[]
}

/**
 * Thrown by `assertHealthy()` (the original spec's `Health(ctx) error`) with
 * the report.
 *
 * @example
 * ```ts
 * try { await events.assertHealthy() } catch (e) { if (e instanceof UnhealthyError) console.error(e.report.reasons) }
 * ```
 */
export class UnhealthyError extends EventSystemError {
  constructor(readonly report: HealthReport) {
    super('UNHEALTHY', `event system unhealthy: ${report.reasons.join('; ')}`)
  }
}

/** Resolves with the PING round trip, or rejects after `timeoutMs`; the timer never outlives the race. */
async function pingWithin(backend: StreamBackend, timeoutMs: number): Promise<number> {
  let timer: NodeJS.Timeout | undefined
  const ping = backend.ping()
  ping.catch(() => undefined) // it may settle after the timeout: nobody waits for it then
  try {
    return await Promise.race([
      ping,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer to PING within ${timeoutMs} ms`)), timeoutMs)
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** A promoter that has not completed a pass for this many intervals (and at least a minute) is reported stuck. */
const STUCK_INTERVALS = 10
const STUCK_MIN_MS = 60_000

/**
 * Checks the health of an event manager (see `EventManager.health()`).
 *
 * @example
 * ```ts
 * import { checkHealth } from 'rx-redis-streams'
 * const report = await checkHealth(source, { timeoutMs: 1_000 })
 * if (!report.ok) console.error(report.reasons)
 * ```
 * @param source what the manager exposes for it
 * @param options the PING timeout
 * @returns the report; never rejects, never hangs past the timeout
 */
export async function checkHealth(source: HealthSource, options: HealthOptions = {}): Promise<HealthReport> {
  const timeoutMs = options.timeoutMs ?? 2_000
  const reasons: string[] = []
  const checkedAt = Date.now()
  let redis: BackendHealth
  if (source.closed) {
    reasons.push('the event manager is closed')
    redis = { kind: source.backend.kind, reachable: false, latencyMs: null, error: 'closed' }
  } else {
    try {
      const latencyMs = await pingWithin(source.backend, timeoutMs)
      redis = { kind: source.backend.kind, reachable: true, latencyMs: Math.round(latencyMs * 1_000) / 1_000 }
    } catch (error) {
      const message = reasonText(error, 300)
      // A node that answers but is not a master (after a failover) is not "unreachable": say what it is.
      const notMaster = (error as { code?: unknown } | null)?.code === 'NOT_MASTER'
      reasons.push(notMaster ? message : `${source.backend.kind === 'redis' ? 'Redis' : 'the store'} is unreachable: ${message}`)
      redis = { kind: source.backend.kind, reachable: false, latencyMs: null, error: message }
    }
  }
  const now = Date.now()
  const subscriptions = source.subscriptions().map((s): SubscriptionHealth => {
    const out: { -readonly [K in keyof SubscriptionHealth]: SubscriptionHealth[K] } = {
      topic: s.topic,
      group: s.group,
      consumer: s.consumer,
      state: s.state,
      held: s.held,
      lastReadAt: s.lastReadAt,
      lastReadAgoMs: s.lastReadAt === null ? null : now - s.lastReadAt,
      claimerAlive: s.claimerAlive,
    }
    if (s.credit !== undefined) out.credit = s.credit
    if (s.error !== undefined) out.error = s.error
    return out
  })
  for (const s of subscriptions) {
    const which = `subscription ${s.topic}/${s.group} (consumer ${s.consumer})`
    // `pulling` only once a read of new entries succeeded (re-reads of its own pending entries do not count):
    // a subscription whose reads of new entries keep failing stays `starting` or `reconnecting`.
    if (s.state === 'reconnecting') reasons.push(`${which} is reconnecting`)
    else if (s.state === 'stalled') reasons.push(`${which} is stalled: a read has not returned for far longer than its block time`)
    else if (s.state === 'errored') reasons.push(`${which} failed: ${s.error ?? 'unknown error'}`)
  }
  const promoters = source.promoters().map((p) => ({ topic: p.topic, alive: p.alive, lastRunAt: p.lastRunAt }))
  const stuckAfter = Math.max(STUCK_MIN_MS, STUCK_INTERVALS * source.promoterIntervalMs)
  for (const p of promoters) {
    if (!p.alive) reasons.push(`the delayed-event promoter of ${p.topic} stopped`)
    else if (p.lastRunAt !== null && now - p.lastRunAt > stuckAfter) {
      reasons.push(`the delayed-event promoter of ${p.topic} has not completed a pass for ${Math.round((now - p.lastRunAt) / 1_000)} s`)
    }
  }
  return { ok: reasons.length === 0, reasons, checkedAt, redis, subscriptions, promoters }
}
