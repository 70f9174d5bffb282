/**
 * The scenario generator: from one seed, the settings, the events with their
 * handler behaviour, and a timeline of actions (publishes, consumers starting,
 * crashing, restarting, unsubscribing, closing, fault windows, store damage).
 * The same generator drives the memory run (virtual time) and the Redis run
 * (real time, fewer steps).
 */
import { Prng } from './prng.js'

export type Api = 'handleEach' | 'subscribe'

export interface SimSettings {
  readonly consumerTimeout: number
  readonly maxRetries: number
  readonly retryBackoff: number
  readonly claimMinIdleTime: number
  readonly claimInterval: number
  readonly batchSize: number
  /** Undefined: credit follows demand. */
  readonly maxPendingMessages: number | undefined
  readonly blockMs: number
  readonly drainTimeout: number
  /** handleEach's retry option: the Config's (`undefined`), none, or its own. */
  readonly handlerRetry: undefined | false | { readonly maxRetries: number; readonly initialDelay: number; readonly jitter: number }
}

/** What one handler run does. */
export type RunBehaviour =
  | { readonly kind: 'ok'; readonly ms: number }
  | { readonly kind: 'ackTwice'; readonly ms: number }
  | { readonly kind: 'throw'; readonly ms: number }
  | { readonly kind: 'nackSelf'; readonly ms: number }
  /** Runs past the consumer timeout; `cooperative` ones stop when the message's signal aborts. */
  | { readonly kind: 'hang'; readonly ms: number; readonly cooperative: boolean }

export const isFailure = (b: RunBehaviour): boolean => b.kind === 'throw' || b.kind === 'nackSelf' || b.kind === 'hang'

export interface EventPlan {
  readonly n: number
  /** good: every run succeeds; flaky: the first `failures` runs fail; poison: every run fails. */
  readonly kind: 'good' | 'flaky' | 'poison'
  readonly failures: number
  /** Seed of this event's run behaviours (run i of event n is a pure function of it). */
  readonly seed: number
  readonly delayMs: number
}

export type Action =
  | { readonly at: number; readonly kind: 'publish'; readonly events: readonly number[] }
  | { readonly at: number; readonly kind: 'start'; readonly consumer: string; readonly api: Api; readonly concurrency: number }
  | { readonly at: number; readonly kind: 'crash'; readonly consumer: string }
  | { readonly at: number; readonly kind: 'unsubscribe'; readonly consumer: string }
  | { readonly at: number; readonly kind: 'close'; readonly consumer: string }
  | { readonly at: number; readonly kind: 'faults'; readonly on: boolean }
  | { readonly at: number; readonly kind: 'deleteEntries'; readonly count: number }
  | { readonly at: number; readonly kind: 'trim'; readonly keep: number }
  | { readonly at: number; readonly kind: 'destroyGroup' }

export interface Scenario {
  readonly seed: number
  readonly settings: SimSettings
  readonly events: readonly EventPlan[]
  readonly actions: readonly Action[]
  /** After this, faults stop and the final consumers run until everything settled. */
  readonly chaosEndMs: number
  /** The final consumers (started at chaosEndMs). */
  readonly finalConsumers: readonly { readonly consumer: string; readonly api: Api; readonly concurrency: number }[]
  readonly faultRates: { readonly reject: number; readonly lostReply: number; readonly slow: number }
  readonly maxDelayMs: number
  readonly slowMs: number
}

export interface GenerateOptions {
  /** Scale of the run: `memory` (default) or the smaller `redis` one. */
  readonly size?: 'memory' | 'redis'
}

/** The behaviour of run `run` (0-based, over all consumers) of an event. */
export function runBehaviour(plan: EventPlan, run: number, settings: SimSettings): RunBehaviour {
  const prng = new Prng((plan.seed ^ Math.imul(run + 1, 0x9e3779b1)) >>> 0)
  const t = settings.consumerTimeout
  const fails = plan.kind === 'poison' || (plan.kind === 'flaky' && run < plan.failures)
  // Successes stay well inside the timeout (store calls and delays included); hangs well past it.
  const quick = prng.chance(0.6) ? prng.int(0, Math.max(1, Math.floor(t * 0.05))) : prng.int(0, Math.floor(t * 0.4))
  if (!fails) return prng.chance(0.85) ? { kind: 'ok', ms: quick } : { kind: 'ackTwice', ms: quick }
  const mode = prng.weighted({ throw: 6, nackSelf: 1, hang: 2 })
  if (mode === 'hang') return { kind: 'hang', ms: Math.floor(t * (1.2 + prng.next() * 1.3)), cooperative: prng.chance(0.5) }
  return { kind: mode, ms: quick }
}

export function generateScenario(seed: number, options: GenerateOptions = {}): Scenario {
  const redis = options.size === 'redis'
  const prng = new Prng(seed)
  const consumerTimeout = redis ? prng.int(400, 1_200) : prng.pick([300, 500, 1_000, 2_000, 5_000])
  const claimMinIdleTime = redis ? prng.int(150, 500) : prng.pick([100, 300, 1_000, 3_000])
  const settings: SimSettings = {
    consumerTimeout,
    maxRetries: prng.int(0, 3),
    retryBackoff: prng.pick(redis ? [20, 50, 100] : [10, 50, 200, 1_000]),
    claimMinIdleTime,
    claimInterval: redis ? prng.int(100, 400) : prng.pick([50, 200, 1_000, 3_000]),
    batchSize: prng.int(1, 10),
    maxPendingMessages: prng.chance(0.5) ? prng.int(1, 8) : undefined,
    // 1 ms is the edge of the range (bug 4 of #11 was 0): rare, because each idle consumer then reads every ms.
    blockMs: redis ? prng.int(20, 200) : Number(prng.weighted({ 1: 1, 10: 2, 100: 3, 1000: 3, 2000: 3 })),
    drainTimeout: redis ? prng.int(200, 600) : prng.pick([100, 500, Math.min(consumerTimeout, 10_000)]),
    handlerRetry: prng.weighted({ config: 2, none: 2, own: 3 }) === 'own'
      ? { maxRetries: prng.int(0, 3), initialDelay: prng.pick(redis ? [10, 30] : [10, 100, 500]), jitter: prng.pick([0, 0.1]) }
      : prng.chance(0.5) ? false : undefined,
  }

  const eventCount = redis ? prng.int(5, 20) : prng.int(3, 40)
  const events: EventPlan[] = []
  const poisonRate = prng.pick([0, 0.05, 0.15, 0.3])
  const flakyRate = prng.pick([0, 0.1, 0.3])
  for (let n = 0; n < eventCount; n++) {
    const r = prng.next()
    const kind = r < poisonRate ? 'poison' : r < poisonRate + flakyRate ? 'flaky' : 'good'
    events.push({ n, kind, failures: prng.int(1, 2), seed: prng.u32(), delayMs: !redis && prng.chance(0.08) ? prng.int(10, 3_000) : 0 })
  }

  const chaosEndMs = redis ? prng.int(1_000, 3_000) : prng.int(1_000, 30_000)
  const actions: Action[] = []
  // Publishing: a few bursts over the chaos phase.
  const bursts = prng.int(1, Math.min(5, eventCount))
  const order = events.map((e) => e.n)
  let next = 0
  for (let b = 0; b < bursts; b++) {
    const size = b === bursts - 1 ? eventCount - next : prng.int(1, Math.max(1, eventCount - next - (bursts - b - 1)))
    actions.push({ at: b === 0 ? 0 : prng.int(0, chaosEndMs), kind: 'publish', events: order.slice(next, next + size) })
    next += size
  }

  // Consumers: names c0..c3; at most one incarnation of a name at a time (the runner enforces it).
  const names = ['c0', 'c1', 'c2', 'c3'].slice(0, redis ? prng.int(1, 2) : prng.int(1, 4))
  const apiOf = (): 'handleEach' | 'subscribe' => (prng.chance(0.7) ? 'handleEach' : 'subscribe')
  for (const consumer of names) actions.push({ at: prng.chance(0.7) ? 0 : prng.int(0, chaosEndMs), kind: 'start', consumer, api: apiOf(), concurrency: prng.int(1, 4) })
  const steps = redis ? prng.int(0, 4) : prng.int(0, 10)
  let faultWindows = 0
  for (let i = 0; i < steps; i++) {
    const at = prng.int(0, chaosEndMs)
    const consumer = prng.pick(names)
    const kind = prng.weighted({ crash: 3, restart: 3, unsubscribe: 2, close: 2, faults: 3, deleteEntries: redis ? 0 : 0.5, trim: redis ? 0 : 0.3, destroyGroup: redis ? 0 : 0.15 })
    switch (kind) {
      case 'crash':
      case 'unsubscribe':
      case 'close':
        actions.push({ at, kind, consumer })
        break
      case 'restart':
        actions.push({ at, kind: 'start', consumer, api: apiOf(), concurrency: prng.int(1, 4) })
        break
      case 'faults': {
        const until = Math.min(chaosEndMs, at + prng.int(50, redis ? 500 : 5_000))
        actions.push({ at, kind: 'faults', on: true }, { at: until, kind: 'faults', on: false })
        faultWindows++
        break
      }
      case 'deleteEntries':
        actions.push({ at, kind: 'deleteEntries', count: prng.int(1, 2) })
        break
      case 'trim':
        actions.push({ at, kind: 'trim', keep: prng.int(Math.max(1, Math.floor(eventCount / 2)), eventCount) })
        break
      case 'destroyGroup':
        actions.push({ at, kind: 'destroyGroup' })
        break
    }
  }
  // Some runs are under faults for their whole chaos phase.
  if (faultWindows === 0 && prng.chance(0.3)) actions.push({ at: 0, kind: 'faults', on: true }, { at: chaosEndMs, kind: 'faults', on: false })
  actions.sort((a, b) => a.at - b.at)

  const finalCount = prng.int(1, 2)
  const finalConsumers = Array.from({ length: finalCount }, (_, i) => ({ consumer: `f${i}`, api: apiOf(), concurrency: prng.int(1, 4) }))
  const rateScale = prng.pick([0.02, 0.1, 0.25])
  return {
    seed,
    settings,
    events,
    actions,
    chaosEndMs,
    finalConsumers,
    faultRates: { reject: rateScale * prng.next(), lostReply: rateScale * prng.next(), slow: rateScale * prng.next() },
    maxDelayMs: prng.pick([0, 2, 5, 20]),
    slowMs: Math.max(1, Math.floor(consumerTimeout * prng.pick([0.05, 0.15, 0.3]))),
  }
}
