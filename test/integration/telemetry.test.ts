import { metrics, propagation, SpanKind, trace } from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { MeterProvider, MetricReader, type DataPoint, type Histogram, type MetricData } from '@opentelemetry/sdk-metrics'
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { newEvent, type Message } from '../../src/index.js'
import { newRedis, randomName } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'
import { entryEnvelope, fieldValue } from '../support/entries.js'

/** A metric reader collected on demand. */
class TestReader extends MetricReader {
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve()
  }
  protected override onShutdown(): Promise<void> {
    return Promise.resolve()
  }
}

const spans = new InMemorySpanExporter()
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] })
const reader = new TestReader()
const meterProvider = new MeterProvider({ readers: [reader] })

beforeAll(() => {
  // Without a context manager on purpose: the library must carry the process context itself.
  trace.setGlobalTracerProvider(tracerProvider)
  propagation.setGlobalPropagator(new W3CTraceContextPropagator())
  metrics.setGlobalMeterProvider(meterProvider)
})

afterAll(async () => {
  trace.disable()
  propagation.disable()
  metrics.disable()
  await tracerProvider.shutdown()
  await meterProvider.shutdown()
})

beforeEach(() => spans.reset())

const spansNamed = (name: string): ReadableSpan[] => spans.getFinishedSpans().filter((s) => s.name === name)

/** The stream entries of a topic as written (either wire layout): the envelope and the layout. */
async function rawEntries(topic: string): Promise<(ReturnType<typeof entryEnvelope> & { layout: 'compact' | 'fields' })[]> {
  const redis = newRedis()
  try {
    const entries = await redis.xrange(`event:stream:{${topic}}`, '-', '+')
    return entries.map(([, fields]) => ({ ...entryEnvelope(fields), layout: fieldValue(fields, 'meta') === undefined ? 'fields' : 'compact' }))
  } finally {
    await redis.quit()
  }
}

async function collectMetrics(): Promise<MetricData[]> {
  const { resourceMetrics, errors } = await reader.collect()
  expect(errors).toEqual([])
  return resourceMetrics.scopeMetrics.flatMap((s) => s.metrics)
}

/** The sum of a counter's (or the count of a histogram's) data points for one topic (and group). */
function valueOf(all: MetricData[], name: string, topic: string, group?: string): number {
  const metric = all.find((m) => m.descriptor.name === name)
  if (metric === undefined) return 0
  let total = 0
  for (const point of metric.dataPoints as DataPoint<number | Histogram>[]) {
    if (point.attributes['messaging.destination.name'] !== topic) continue
    if (group !== undefined && point.attributes['messaging.consumer.group.name'] !== group) continue
    total += typeof point.value === 'number' ? point.value : point.value.count
  }
  return total
}

describe('traces', () => {
  it.each([
    ['compact', {}],
    ['fields', { wireFormat: 'fields' }],
  ] as const)('publishes under a send span whose context travels in traceparent (%s layout), and handles under a linked process span', async (layout, options) => {
    const events = testEvents(options)
    const topic = randomName('traced')
    const downstream = randomName('downstream')
    const group = randomName('g')
    const event = newEvent('order.placed', { orderId: 7 })
    await events.publish(topic, event)

    const [send] = spansNamed(`send ${topic}`)
    expect(send).toBeDefined()
    expect(send!.kind).toBe(SpanKind.PRODUCER)
    expect(send!.attributes).toMatchObject({
      'messaging.system': 'redis',
      'messaging.destination.name': topic,
      'messaging.operation.name': 'send',
      'messaging.message.id': event.id,
    })
    const [entry] = await rawEntries(topic)
    const { traceId, spanId } = send!.spanContext()
    expect(entry?.layout).toBe(layout)
    expect(entry?.traceparent).toBe(`00-${traceId}-${spanId}-01`)

    let handled = 0
    const sub = events.subscribe(topic, group, async (msg) => {
      await events.publish(downstream, newEvent('payment.charge', { orderId: (msg.event.payload as { orderId: number }).orderId }))
      handled++
    })
    await waitFor(() => handled === 1 && spansNamed(`process ${topic}`).length === 1)
    const [processSpan] = spansNamed(`process ${topic}`)
    expect(processSpan!.kind).toBe(SpanKind.CONSUMER)
    expect(processSpan!.attributes).toMatchObject({
      'messaging.system': 'redis',
      'messaging.destination.name': topic,
      'messaging.consumer.group.name': group,
      'messaging.message.id': event.id,
      'messaging.operation.name': 'process',
      'rx_redis_streams.outcome': 'acked',
    })
    expect(processSpan!.links.map((l) => ({ traceId: l.context.traceId, spanId: l.context.spanId }))).toEqual([{ traceId, spanId }])

    // The handler's publish is a child of the process span, and carries its trace on.
    const [child] = spansNamed(`send ${downstream}`)
    expect(child!.parentSpanContext?.spanId).toBe(processSpan!.spanContext().spanId)
    expect(child!.spanContext().traceId).toBe(processSpan!.spanContext().traceId)
    const [downstreamEntry] = await rawEntries(downstream)
    expect(downstreamEntry?.layout).toBe(layout)
    expect(downstreamEntry?.traceparent).toBe(`00-${child!.spanContext().traceId}-${child!.spanContext().spanId}-01`)
    expect(downstreamEntry?.cid).toBe(event.id)
    await sub.unsubscribe()
  })

  it('marks a failed send span and a dead-lettered process span as errors', async () => {
    const events = testEvents({ maxRetries: 0 })
    const topic = randomName('traced')
    await expect(events.publish(topic, newEvent('x', 10n))).rejects.toMatchObject({ code: 'SERIALIZATION_FAILED' })
    expect(spansNamed(`send ${topic}`)[0]?.status.code).toBe(2)
    await events.publish(topic, newEvent('x', 1))
    let attempts = 0
    const sub = events.subscribe(topic, randomName('g'), () => {
      attempts++
      throw new Error('always fails')
    })
    await waitFor(() => spansNamed(`process ${topic}`).length === 1)
    const [failed] = spansNamed(`process ${topic}`)
    expect(attempts).toBe(1)
    expect(failed!.attributes['rx_redis_streams.outcome']).toBe('dead-lettered')
    expect(failed!.status).toMatchObject({ code: 2, message: 'always fails' })
    await sub.unsubscribe()
  })
})

describe('metrics', () => {
  it('counts sent, consumed, acked, retried, nacked, dead-lettered and promoted messages, records process durations, and observes group lag and pending', async () => {
    const events = testEvents({ maxRetries: 1, retryBackoff: '10ms' })
    const topic = randomName('metered')
    const group = randomName('g')
    // 3 succeed at once, 1 succeeds on its retry, 2 fail twice and are dead-lettered.
    const plan = ['ok', 'ok', 'ok', 'flaky', 'bad', 'bad']
    await events.publishBatch(topic, plan.map((kind, i) => newEvent('job', { kind, i })))
    const failures = new Map<number, number>()
    let settled = 0
    const sub = events.subscribe(
      topic,
      group,
      (msg: Message<{ kind: string; i: number }>) => {
        const { kind, i } = msg.event.payload
        const n = failures.get(i) ?? 0
        if (kind === 'bad' || (kind === 'flaky' && n === 0)) {
          failures.set(i, n + 1)
          throw new Error(`job ${i} failed`)
        }
      },
      { retry: { maxRetries: 1, initialDelay: 10, jitter: 0 }, concurrency: 6, onSettled: () => settled++ },
    )
    // retry: false → a failure nacks; the engine redelivers it (delivery 2) and it succeeds.
    const nackTopic = randomName('nacked')
    const nackGroup = randomName('g')
    await events.publish(nackTopic, newEvent('job', {}))
    let nackSettled = 0
    const nackSub = events.subscribe(
      nackTopic,
      nackGroup,
      (msg) => {
        if (msg.deliveryCount === 1) throw new Error('first delivery fails')
      },
      { retry: false, onSettled: (h) => h.outcome === 'acked' && nackSettled++ },
    )
    // A delayed event, promoted when due.
    const delayedTopic = randomName('delayed')
    await events.publishWithDelay(delayedTopic, newEvent('later', {}), 20)
    let delayedHandled = 0
    const delayedSub = events.subscribe(delayedTopic, group, () => {
      delayedHandled++
    })
    // A group that holds 2 messages unsettled: pending 2, lag 4.
    const holder = randomName('holder')
    const held: Message[] = []
    events.consume(topic, { group: holder, maxPendingMessages: 2, drainTimeout: 50 }).subscribe((m) => held.push(m))
    await waitFor(() => settled === 6 && nackSettled === 1 && held.length === 2 && delayedHandled === 1, 10_000, 'every message settled')
    await waitFor(async () => (await events.stats(topic)).topics[topic]?.groups[group]?.pending === 0)

    const all = await collectMetrics()
    expect(valueOf(all, 'messaging.client.sent.messages', topic)).toBe(6)
    expect(valueOf(all, 'messaging.client.consumed.messages', topic, group)).toBe(6)
    expect(valueOf(all, 'rx_redis_streams.messages.acked', topic, group)).toBe(4)
    expect(valueOf(all, 'rx_redis_streams.messages.retried', topic, group)).toBe(3)
    expect(valueOf(all, 'rx_redis_streams.messages.dead_lettered', topic, group)).toBe(2)
    expect(valueOf(all, 'rx_redis_streams.messages.nacked', topic, group)).toBe(0)
    expect(valueOf(all, 'messaging.process.duration', topic, group)).toBe(6)
    const duration = all.find((m) => m.descriptor.name === 'messaging.process.duration')!
    expect(duration.descriptor.unit).toBe('s')

    expect(valueOf(all, 'rx_redis_streams.messages.nacked', nackTopic, nackGroup)).toBe(1)
    expect(valueOf(all, 'rx_redis_streams.messages.retried', nackTopic, nackGroup)).toBe(1)
    expect(valueOf(all, 'messaging.client.consumed.messages', nackTopic, nackGroup)).toBe(2)
    expect(valueOf(all, 'rx_redis_streams.messages.acked', nackTopic, nackGroup)).toBe(1)

    expect(valueOf(all, 'rx_redis_streams.delayed.promoted', delayedTopic)).toBe(1)
    expect(valueOf(all, 'messaging.client.consumed.messages', delayedTopic, group)).toBe(1)

    // Gauges of the groups of the consumed topics, read from the store when collected.
    expect(valueOf(all, 'rx_redis_streams.consumer_group.pending', topic, group)).toBe(0)
    expect(valueOf(all, 'rx_redis_streams.consumer_group.lag', topic, group)).toBe(0)
    expect(valueOf(all, 'rx_redis_streams.consumer_group.pending', topic, holder)).toBe(2)
    expect(valueOf(all, 'rx_redis_streams.consumer_group.lag', topic, holder)).toBe(4)
    await sub.unsubscribe()
    await nackSub.unsubscribe()
    await delayedSub.unsubscribe()
  })
})
