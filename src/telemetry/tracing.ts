/**
 * Traces through `@opentelemetry/api` only: a `send <topic>` span (PRODUCER)
 * around publishing, whose context travels in the entry's `traceparent` field,
 * and a `process <topic>` span (CONSUMER) around handling, linked to it.
 * Nothing is allocated while no tracer provider is registered.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import {
  context,
  isSpanContextValid,
  propagation,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type SpanContext,
  type Tracer,
} from '@opentelemetry/api'
import type { Message } from '../consumer/message.js'
import type { Event, WireExtras } from '../event.js'
import type { Outcome } from '../settle.js'
import { reasonText } from '../settle.js'
import { INSTRUMENTATION_SCOPE, INSTRUMENTATION_VERSION } from './instruments.js'

/** The delegate of a proxy that has none: the API's no-op provider. */
const NOOP_TRACER_PROVIDER = new ProxyTracerProvider().getDelegate()

/**
 * True once an application registered a tracer provider (an OpenTelemetry SDK).
 * Checked on every publish and every handled message, so that tracing costs
 * nothing until then.
 *
 * @example
 * ```ts
 * import { isTracingEnabled } from 'rx-redis-streams'
 * isTracingEnabled() // false until e.g. new NodeSDK(...).start()
 * ```
 */
export function isTracingEnabled(): boolean {
  const provider = trace.getTracerProvider()
  // Another copy of the API may own the global proxy: then assume enabled (a no-op span is harmless).
  return !(provider instanceof ProxyTracerProvider) || provider.getDelegate() !== NOOP_TRACER_PROVIDER
}

function tracer(): Tracer {
  return trace.getTracer(INSTRUMENTATION_SCOPE, INSTRUMENTATION_VERSION)
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$/

/**
 * Parses a W3C `traceparent` header into a (remote) span context; undefined
 * when it is malformed or invalid.
 *
 * @example
 * ```ts
 * import { parseTraceparent } from 'rx-redis-streams'
 * parseTraceparent('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01')?.traceId // '0af7…319c'
 * ```
 */
export function parseTraceparent(value: string | undefined): SpanContext | undefined {
  if (value === undefined) return undefined
  const match = TRACEPARENT.exec(value.trim().toLowerCase())
  if (match === null || match[1] === 'ff') return undefined
  const spanContext: SpanContext = {
    traceId: match[2] as string,
    spanId: match[3] as string,
    traceFlags: Number.parseInt(match[4] as string, 16) & 0xff,
    isRemote: true,
  }
  return isSpanContextValid(spanContext) ? spanContext : undefined
}

/**
 * Formats a span context as a W3C `traceparent` header.
 *
 * @example
 * ```ts
 * import { trace } from '@opentelemetry/api'
 * import { formatTraceparent } from 'rx-redis-streams'
 * formatTraceparent(trace.getActiveSpan()!.spanContext()) // '00-<trace id>-<span id>-01'
 * ```
 */
export function formatTraceparent(spanContext: SpanContext): string {
  return `00-${spanContext.traceId}-${spanContext.spanId}-${(spanContext.traceFlags & 0xff).toString(16).padStart(2, '0')}`
}

/** The `traceparent` of a context: through the registered propagator, else formatted directly. */
function traceparentOf(ctx: Context): string | undefined {
  const carrier: Record<string, string> = {}
  propagation.inject(ctx, carrier)
  const injected = carrier['traceparent']
  if (injected !== undefined) return injected
  const spanContext = trace.getSpanContext(ctx)
  return spanContext !== undefined && isSpanContextValid(spanContext) ? formatTraceparent(spanContext) : undefined
}

/** The producer's span context carried by a stored entry. */
function producerContext(traceparent: string | undefined): SpanContext | undefined {
  if (traceparent === undefined) return undefined
  const extracted = trace.getSpanContext(propagation.extract(ROOT_CONTEXT, { traceparent }))
  if (extracted !== undefined && isSpanContextValid(extracted)) return extracted
  return parseTraceparent(traceparent)
}

/**
 * The context of the `process` span being handled in this async context. Kept
 * by the library itself, so that events published by a handler join its trace
 * even when the application registered no OpenTelemetry context manager.
 */
const processStorage = new AsyncLocalStorage<Context>()

/** The active context; inside a handler without a context manager, the process span's context. */
function parentContext(): Context {
  const active = context.active()
  if (trace.getSpan(active) !== undefined) return active
  return processStorage.getStore() ?? active
}

/** What the hook returns when there is nothing to add (shared: publishing is a hot path). */
const NO_EXTRAS: WireExtras = Object.freeze({})

/** Set for the duration of one synchronous publish call: the `send` span's context, for the publish hook. */
let sendContext: Context | undefined

/**
 * The default publish hook of the event manager: writes the `traceparent` of
 * the `send` span being published under into the entry (nothing when tracing
 * is off).
 *
 * @example
 * ```ts
 * import { createEventManager, traceContextHook } from 'rx-redis-streams'
 * // the default; pass your own `publishHook` to carry something else
 * const events = createEventManager({ publishHook: traceContextHook })
 * ```
 */
export function traceContextHook(_topic: string, _event: Event): WireExtras {
  const ctx = sendContext
  if (ctx === undefined) return NO_EXTRAS
  const traceparent = traceparentOf(ctx)
  return traceparent === undefined ? NO_EXTRAS : { traceparent }
}

function recordFailure(span: Span, error: unknown): void {
  if (error instanceof Error) span.recordException(error)
  span.setStatus({ code: SpanStatusCode.ERROR, message: reasonText(error, 300) })
  span.setAttribute('error.type', error instanceof Error ? error.name : 'Error')
}

/**
 * Runs a publish under a `send <topic>` span (kind PRODUCER). `publish` must
 * encode its events synchronously (it does: every check happens before any
 * I/O), which is when {@link traceContextHook} reads the span's context.
 *
 * @example
 * ```ts
 * const id = await withSendSpan('orders', [event], () => publisher.publish('orders', event))
 * ```
 */
export function withSendSpan<T>(topic: string, events: readonly Event[], publish: () => Promise<T>): Promise<T> {
  if (!isTracingEnabled()) return publish()
  const parent = parentContext()
  const attributes: Attributes = {
    'messaging.system': 'redis',
    'messaging.destination.name': topic,
    'messaging.operation.name': 'send',
    'messaging.operation.type': 'send',
  }
  const [first] = events
  if (events.length === 1 && first !== undefined) {
    attributes['messaging.message.id'] = first.id
    if (first.correlationId !== undefined) attributes['messaging.message.conversation_id'] = first.correlationId
  } else {
    attributes['messaging.batch.message_count'] = events.length
  }
  const span = tracer().startSpan(`send ${topic}`, { kind: SpanKind.PRODUCER, attributes }, parent)
  const previous = sendContext
  sendContext = trace.setSpan(parent, span)
  let result: Promise<T>
  try {
    result = publish()
  } catch (error) {
    recordFailure(span, error)
    span.end()
    throw error
  } finally {
    sendContext = previous
  }
  return result.then(
    (value) => {
      span.end()
      return value
    },
    (error: unknown) => {
      recordFailure(span, error)
      span.end()
      throw error
    },
  )
}

/**
 * The handling of one message under a `process <topic>` span.
 *
 * @example
 * ```ts
 * const span = startProcessSpan(msg)
 * try { await span.run(() => handle(msg)); span.end(await msg.ack()) } catch (e) { span.end(await msg.nack(e), e) }
 * ```
 */
export interface ProcessSpan {
  /** Runs one attempt of the handler in the span's context (nested publishes become its children). */
  run<T>(fn: () => T): T
  /** Ends the span with the message's outcome. */
  end(outcome: Outcome, error?: unknown): void
}

const NO_PROCESS_SPAN: ProcessSpan = { run: (fn) => fn(), end: () => undefined }

/**
 * Starts a `process <topic>` span (kind CONSUMER) for a message, linked to the
 * producer's `send` span found in the entry's `traceparent`. A no-op while no
 * tracer provider is registered.
 *
 * @example
 * ```ts
 * const span = startProcessSpan(msg)
 * await span.run(() => handle(msg))
 * span.end(await msg.ack())
 * ```
 */
export function startProcessSpan(message: Message): ProcessSpan {
  if (!isTracingEnabled()) return NO_PROCESS_SPAN
  const event = message.event
  const attributes: Attributes = {
    'messaging.system': 'redis',
    'messaging.destination.name': message.topic,
    'messaging.consumer.group.name': message.group,
    'messaging.client.id': message.consumer,
    'messaging.message.id': event.id,
    'messaging.operation.name': 'process',
    'messaging.operation.type': 'process',
    'messaging.message.delivery_count': message.deliveryCount,
    'rx_redis_streams.stream_id': message.streamId,
    'rx_redis_streams.event.name': event.name,
  }
  if (event.correlationId !== undefined) attributes['messaging.message.conversation_id'] = event.correlationId
  const producer = producerContext((event as { readonly traceparent?: string }).traceparent)
  const links: Link[] = producer === undefined ? [] : [{ context: producer }]
  const parent = parentContext()
  const span = tracer().startSpan(`process ${message.topic}`, { kind: SpanKind.CONSUMER, attributes, links }, parent)
  const ctx = trace.setSpan(parent, span)
  let ended = false
  return {
    run: (fn) => context.with(ctx, () => processStorage.run(ctx, fn)),
    end: (outcome, error) => {
      if (ended) return
      ended = true
      span.setAttribute('rx_redis_streams.outcome', outcome)
      if (outcome !== 'acked') recordFailure(span, error ?? new Error(outcome))
      span.end()
    },
  }
}
