import { metrics, type Attributes, type Counter, type Histogram } from '@opentelemetry/api'

/**
 * Library name reported to OpenTelemetry (the meter and tracer name).
 *
 * @example
 * ```ts
 * // OpenTelemetry views can select the library's instruments by scope:
 * new View({ meterName: INSTRUMENTATION_SCOPE, instrumentName: 'messaging.process.duration' })
 * ```
 */
export const INSTRUMENTATION_SCOPE = 'rx-redis-streams'
/**
 * Library version reported to OpenTelemetry.
 *
 * @example
 * ```ts
 * console.log(INSTRUMENTATION_VERSION) // '0.1.0'
 * ```
 */
export const INSTRUMENTATION_VERSION = '0.1.0'

/** Counters the engine bumps; all are no-ops until the application registers an OpenTelemetry SDK. */
export interface Instruments {
  readonly sent: Counter
  readonly consumed: Counter
  readonly processDuration: Histogram
  readonly acked: Counter
  readonly retried: Counter
  readonly nacked: Counter
  readonly deadLettered: Counter
  readonly claimed: Counter
  readonly lost: Counter
  readonly promoted: Counter
}

/** Attributes of one topic (and group) per the OpenTelemetry messaging conventions. */
export function messagingAttributes(topic: string, group?: string): Attributes {
  const attributes: Attributes = { 'messaging.system': 'redis', 'messaging.destination.name': topic }
  if (group !== undefined) attributes['messaging.consumer.group.name'] = group
  return attributes
}

/** Creates the instruments from the global MeterProvider (looked up at creation time). */
export function createInstruments(): Instruments {
  const meter = metrics.getMeter(INSTRUMENTATION_SCOPE, INSTRUMENTATION_VERSION)
  return {
    sent: meter.createCounter('messaging.client.sent.messages', { description: 'Messages published', unit: '{message}' }),
    consumed: meter.createCounter('messaging.client.consumed.messages', { description: 'Messages delivered to a consumer', unit: '{message}' }),
    processDuration: meter.createHistogram('messaging.process.duration', { description: 'Time to handle a message', unit: 's' }),
    acked: meter.createCounter('rx_redis_streams.messages.acked', { unit: '{message}' }),
    retried: meter.createCounter('rx_redis_streams.messages.retried', { unit: '{message}' }),
    nacked: meter.createCounter('rx_redis_streams.messages.nacked', { unit: '{message}' }),
    deadLettered: meter.createCounter('rx_redis_streams.messages.dead_lettered', { unit: '{message}' }),
    claimed: meter.createCounter('rx_redis_streams.messages.claimed', { unit: '{message}' }),
    lost: meter.createCounter('rx_redis_streams.messages.lost', { description: 'Pending entries whose bodies were deleted or trimmed', unit: '{message}' }),
    promoted: meter.createCounter('rx_redis_streams.delayed.promoted', { unit: '{message}' }),
  }
}

let current: { readonly provider: unknown; readonly instruments: Instruments } | undefined

/**
 * The instruments of the MeterProvider registered now (created again when the
 * application registers another one). For code that outlives providers, such
 * as operators.
 *
 * @example
 * ```ts
 * currentInstruments().processDuration.record(0.012, messagingAttributes('orders', 'billing'))
 * ```
 */
export function currentInstruments(): Instruments {
  const provider = metrics.getMeterProvider()
  if (current?.provider !== provider) current = { provider, instruments: createInstruments() }
  return current.instruments
}
