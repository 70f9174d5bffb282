/**
 * Observable gauges for consumer group lag and pending counts. Their values are
 * read from cached stats, refreshed from the store only when a metric reader
 * collects and the cache is older than `maxAgeMs`: no timer runs, and nothing
 * at all happens while no MeterProvider is registered.
 */
import { createNoopMeter, metrics, type BatchObservableCallback } from '@opentelemetry/api'
import { INSTRUMENTATION_SCOPE, INSTRUMENTATION_VERSION } from './instruments.js'

/**
 * One consumer group's numbers, as observed.
 *
 * @example
 * ```ts
 * const sample: GroupSample = { topic: 'orders', group: 'billing', pending: 3, lag: 120 }
 * ```
 */
export interface GroupSample {
  readonly topic: string
  readonly group: string
  readonly pending: number
  /** Undelivered entries; null when Redis cannot tell (then not observed). */
  readonly lag: number | null
}

/**
 * Options of {@link observeGroupGauges}.
 *
 * @example
 * ```ts
 * observeGroupGauges({ sample: readGroups, maxAgeMs: 15_000, timeoutMs: 1_000 })
 * ```
 */
export interface GroupGaugeOptions {
  /** Reads the current samples from the store. */
  readonly sample: () => Promise<readonly GroupSample[]>
  /** Reuse samples younger than this, ms. Default 5 000. */
  readonly maxAgeMs?: number
  /** Give up a refresh after this long (the cached samples are observed), ms. Default 2 000. */
  readonly timeoutMs?: number
}

/**
 * Name of the lag gauge of a consumer group (entries not yet delivered to it).
 *
 * @example
 * ```ts
 * // PromQL, with the OTLP → Prometheus name mapping: rx_redis_streams_consumer_group_lag{messaging_consumer_group_name="billing"}
 * console.log(GROUP_LAG_METRIC) // 'rx_redis_streams.consumer_group.lag'
 * ```
 */
export const GROUP_LAG_METRIC = 'rx_redis_streams.consumer_group.lag'
/**
 * Name of the pending-entries gauge of a consumer group.
 *
 * @example
 * ```ts
 * console.log(GROUP_PENDING_METRIC) // 'rx_redis_streams.consumer_group.pending'
 * ```
 */
export const GROUP_PENDING_METRIC = 'rx_redis_streams.consumer_group.pending'

/**
 * Registers the `rx_redis_streams.consumer_group.lag` and `.pending` gauges
 * (attributes: `messaging.destination.name`, `messaging.consumer.group.name`)
 * on the global MeterProvider; returns their removal. Nothing is registered
 * when no MeterProvider is.
 *
 * @example
 * ```ts
 * const stop = observeGroupGauges({ sample: async () => [{ topic: 'orders', group: 'billing', pending: 3, lag: 10 }] })
 * stop()
 * ```
 */
export function observeGroupGauges(options: GroupGaugeOptions): () => void {
  const meter = metrics.getMeter(INSTRUMENTATION_SCOPE, INSTRUMENTATION_VERSION)
  if (meter === createNoopMeter()) return () => undefined
  const maxAgeMs = options.maxAgeMs ?? 5_000
  const timeoutMs = options.timeoutMs ?? 2_000
  const lag = meter.createObservableGauge(GROUP_LAG_METRIC, { description: 'Entries of the topic not yet delivered to the consumer group', unit: '{message}' })
  const pending = meter.createObservableGauge(GROUP_PENDING_METRIC, { description: 'Entries delivered to the consumer group and not yet settled', unit: '{message}' })
  let cache: { at: number; samples: readonly GroupSample[] } | undefined
  let refreshing: Promise<void> | undefined

  const refresh = (): Promise<void> => {
    refreshing ??= options
      .sample()
      .then((samples) => {
        cache = { at: Date.now(), samples }
      })
      .catch(() => undefined) // the store is unreachable: keep the last samples
      .finally(() => (refreshing = undefined))
    return refreshing
  }

  const callback: BatchObservableCallback = async (result) => {
    if (cache === undefined || Date.now() - cache.at > maxAgeMs) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([refresh(), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))])
      clearTimeout(timer)
    }
    for (const s of cache?.samples ?? []) {
      const attributes = { 'messaging.system': 'redis', 'messaging.destination.name': s.topic, 'messaging.consumer.group.name': s.group }
      result.observe(pending, s.pending, attributes)
      if (s.lag !== null) result.observe(lag, s.lag, attributes)
    }
  }
  meter.addBatchObservableCallback(callback, [lag, pending])
  return () => meter.removeBatchObservableCallback(callback, [lag, pending])
}
