/**
 * The benchmark scenarios: each workload as the library does it and as two
 * hand-written raw ioredis programs do it.
 *
 * - `raw1`: what a user writes when rolling their own loop: ONE field per entry
 *   (`event`, the JSON envelope `{ id, type, time, data }`), XREADGROUP COUNT
 *   100, `JSON.parse` of every entry, one XACK per batch.
 * - `raw5`: the same loop reading the library's own five-field entries
 *   (`id`, `name`, `ts`, `headers`, `payload`), parsing headers and payload.
 * - `library`: rx-redis-streams, writing (and, for drains, reading a prefill
 *   in) the layout a user gets: the library's default (`compact`, `meta` +
 *   `payload`), or the one BENCH_WIRE_FORMAT names (`compact` | `fields`, the
 *   latter being EVENT_WIRE_FORMAT=fields, the five-field layout).
 *
 * Each scenario runs in a fresh process (bench/child.ts) so that no side
 * inherits the other's JIT state, heap or connections.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { Redis } from 'ioredis'
import { firstValueFrom, filter, map, scan } from 'rxjs'
import type * as Library from '../src/index.js'
import type * as Operators from '../operators/index.js'

// BENCH_DIST=1 measures the built package (`npm run build` first) instead of the sources through tsx.
const root = process.env['BENCH_DIST'] === '1' ? '../dist/' : '../'
const { createEventManager, loadConfig, newEvent } = (await import(`${root}src/index.js`)) as typeof Library
const { handleEach } = (await import(`${root}operators/index.js`)) as typeof Operators
type EventManager = Library.EventManager

/** Which program does the work. */
export type Side = 'library' | 'raw5' | 'raw1'
/** How entries are laid out in the stream: the library's two layouts, and the hand-written one. */
export type WireFormat = 'five-field' | 'compact' | 'one-field'

/**
 * The library's EVENT_WIRE_FORMAT in this process: BENCH_WIRE_FORMAT (`compact` | `fields`) when set, else
 * undefined (the library's default). Any other value is refused: a typo must not measure the wrong layout.
 */
export function benchWireFormat(): 'compact' | 'fields' | undefined {
  const value = process.env['BENCH_WIRE_FORMAT']
  if (value === undefined || value === '') return undefined
  if (value === 'compact' || value === 'fields') return value
  throw new Error(`BENCH_WIRE_FORMAT=${value}: must be "compact" or "fields" (unset: the library's default)`)
}

/** The layout the library under measurement writes: BENCH_WIRE_FORMAT, else its own default. */
export const libraryFormat = (): WireFormat => ((benchWireFormat() ?? loadConfig({}, {}).wireFormat) === 'compact' ? 'compact' : 'five-field')

/** The library reads its own layout (see libraryFormat); raw5 reads five fields; raw1 its own one-field envelope. */
export const formatOf = (side: Side): WireFormat => (side === 'raw1' ? 'one-field' : side === 'library' ? libraryFormat() : 'five-field')

const PAYLOAD = { userId: 123, email: 'user@example.com', plan: 'premium', tags: ['a', 'b', 'c'] }
/** The one field of a hand-written entry. */
export const ENVELOPE_FIELD = 'event'

export const randomTopic = (prefix: string): string => `bench-${prefix}-${randomBytes(4).toString('hex')}`
export const streamKey = (topic: string): string => `event:stream:{${topic}}`

/** The library's five wire fields, built by hand as a raw ioredis user would. */
function fiveFields(i: number): string[] {
  return ['id', randomUUID(), 'name', 'user.action', 'ts', String(Date.now()), 'headers', '{}', 'payload', JSON.stringify({ ...PAYLOAD, i })]
}

/** The hand-written layout: one field holding the whole JSON envelope (~200 bytes). */
function oneField(i: number): string[] {
  return [ENVELOPE_FIELD, JSON.stringify({ id: randomUUID(), type: 'user.action', time: Date.now(), data: { ...PAYLOAD, i } })]
}

/** The library's compact layout: `meta` (JSON array [id, name, ts, headers]) and `payload`. */
function compactFields(i: number): string[] {
  return ['meta', JSON.stringify([randomUUID(), 'user.action', Date.now(), {}]), 'payload', JSON.stringify({ ...PAYLOAD, i })]
}

export const fieldsFor = (format: WireFormat): ((i: number) => string[]) =>
  format === 'one-field' ? oneField : format === 'compact' ? compactFields : fiveFields

/**
 * A manager on `url`; `retrySafe: false` turns the publish dedupe window off (EVENT_PUBLISH_DEDUPE_WINDOW=0);
 * BENCH_WIRE_FORMAT (`compact` | `fields`) sets the layout it writes, unset leaves the library's default.
 */
function manager(url: string, retrySafe = true): EventManager {
  const wireFormat = benchWireFormat()
  return createEventManager({
    redisUrl: url,
    env: {},
    delayedQueueEnabled: false,
    ...(retrySafe ? {} : { publishDedupeWindow: 0 }),
    ...(wireFormat === undefined ? {} : { wireFormat }),
  })
}

export function rawClient(url: string, autoPipelining = true): Redis {
  return new Redis(url, { enableAutoPipelining: autoPipelining, maxRetriesPerRequest: null })
}

/** Runs `total` tasks with `concurrency` workers; resolves to tasks per second. */
async function pool(total: number, concurrency: number, task: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) await task(next++)
    }),
  )
  return (total / (performance.now() - started)) * 1_000
}

// ---------------------------------------------------------------- publishing

/** One XADD (or `publish()`) at a time per worker, `concurrency` workers; messages/s. */
export async function publishOne(side: Side, url: string, count: number, concurrency: number, retrySafe = true): Promise<number> {
  if (side === 'library') {
    const events = manager(url, retrySafe)
    const topic = randomTopic('pub-lib')
    try {
      await events.publish(topic, newEvent('warm.up', {})) // registers the topic: the steady state is measured
      return await pool(count, concurrency, (i) => events.publish(topic, newEvent('user.action', { ...PAYLOAD, i })))
    } finally {
      await events.close()
    }
  }
  const redis = rawClient(url)
  const key = streamKey(randomTopic(`pub-${side}`))
  const fields = fieldsFor(formatOf(side))
  try {
    return await pool(count, concurrency, (i) => redis.xadd(key, '*', ...fields(i)))
  } finally {
    await redis.quit()
  }
}

/** Batches of `size`: `publishBatch()` (one script) against a pipeline of XADDs; 8 batches in flight; messages/s. */
export async function publishBatch(side: Side, url: string, count: number, size: number, retrySafe = true): Promise<number> {
  const batches = Math.max(1, Math.round(count / size))
  if (side === 'library') {
    const events = manager(url, retrySafe)
    const topic = randomTopic('batch-lib')
    try {
      await events.publish(topic, newEvent('warm.up', {}))
      const rate = await pool(batches, 8, (b) =>
        events.publishBatch(topic, Array.from({ length: size }, (_, i) => newEvent('user.action', { ...PAYLOAD, i: b * size + i }))),
      )
      return rate * size
    } finally {
      await events.close()
    }
  }
  const redis = rawClient(url, false)
  const key = streamKey(randomTopic(`batch-${side}`))
  const fields = fieldsFor(formatOf(side))
  try {
    const rate = await pool(batches, 8, async (b) => {
      const pipeline = redis.pipeline()
      for (let i = 0; i < size; i++) pipeline.xadd(key, '*', ...fields(b * size + i))
      await pipeline.exec()
    })
    return rate * size
  } finally {
    await redis.quit()
  }
}

/** Fills `topic` with `count` entries in `format` (pipelines of 1,000 XADDs, 4 in flight). */
export async function prefill(url: string, topic: string, count: number, format: WireFormat): Promise<void> {
  const redis = rawClient(url, false)
  const key = streamKey(topic)
  const fields = fieldsFor(format)
  try {
    const chunks = Math.ceil(count / 1_000)
    await pool(chunks, 4, async (c) => {
      const pipeline = redis.pipeline()
      for (let i = c * 1_000; i < Math.min(count, (c + 1) * 1_000); i++) pipeline.xadd(key, '*', ...fields(i))
      await pipeline.exec()
    })
  } finally {
    await redis.quit()
  }
}

// ---------------------------------------------------------------- draining

/** What a drain does with each message. */
export interface DrainOptions {
  /** XREADGROUP COUNT (raw) or `batchSize` (library); for `subscribe`, undefined means the Config default. */
  readonly batchSize?: number
  /** `handleEach` / `subscribe` concurrency (library only). */
  readonly concurrency: number
  /** The library handler reads `msg.event.payload` (the raw loops always parse). */
  readonly readPayload: boolean
  /** Drain with `events.subscribe()` instead of `consume().pipe(handleEach())`. */
  readonly viaSubscribe?: boolean
}

type XReadReply = [string, [string, string[]][]][] | null

/** The hand-written loop: XREADGROUP COUNT n, parse every entry, one XACK per batch (awaited). */
async function drainRaw(side: 'raw1' | 'raw5', url: string, topic: string, count: number, batchSize: number): Promise<number> {
  const redis = rawClient(url, false)
  const key = streamKey(topic)
  const group = 'raw'
  try {
    const started = performance.now()
    await redis.xgroup('CREATE', key, group, '0', 'MKSTREAM')
    let handled = 0
    while (handled < count) {
      const reply = (await redis.xreadgroup('GROUP', group, 'c1', 'COUNT', batchSize, 'BLOCK', 1_000, 'STREAMS', key, '>')) as XReadReply
      const entries = reply?.[0]?.[1] ?? []
      const ids: string[] = []
      for (const [id, fields] of entries) {
        if (side === 'raw1') {
          const envelope = JSON.parse(fields[1] ?? 'null') as { id?: string; type?: string; data?: unknown } | null
          if (typeof envelope?.type !== 'string') throw new Error('bad entry')
        } else {
          const record: Record<string, string> = {}
          for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i] as string] = fields[i + 1] as string
          const event = { id: record['id'], name: record['name'], headers: JSON.parse(record['headers'] ?? '{}') as unknown, payload: JSON.parse(record['payload'] ?? 'null') as unknown }
          if (event.name === undefined) throw new Error('bad entry')
        }
        ids.push(id)
      }
      if (ids.length > 0) await redis.xack(key, group, ...ids)
      handled += ids.length
    }
    return (count / (performance.now() - started)) * 1_000
  } finally {
    await redis.quit()
  }
}

/** Fails loudly if a payload did not decode (so that the read cannot be optimised away). */
function touch(payload: unknown): void {
  if (payload === undefined) throw new Error('no payload')
}

async function drainLibrary(url: string, topic: string, count: number, options: DrainOptions): Promise<number> {
  const events = manager(url)
  const handler = options.readPayload ? (msg: { event: { payload: unknown } }) => touch(msg.event.payload) : () => undefined
  try {
    const started = performance.now()
    if (options.viaSubscribe === true) {
      let handled = 0
      let done: () => void = () => undefined
      const finished = new Promise<void>((resolve) => (done = resolve))
      const sub = events.subscribe(topic, 'lib', handler, {
        concurrency: options.concurrency,
        ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
        onSettled: () => {
          if (++handled === count) done()
        },
      })
      await finished
      const rate = (count / (performance.now() - started)) * 1_000
      await sub.unsubscribe()
      return rate
    }
    await firstValueFrom(
      events
        .topic(topic)
        .consume({ group: 'lib', batchSize: options.batchSize ?? 100, blockMs: 1_000 })
        .pipe(
          handleEach(handler, { concurrency: options.concurrency }),
          scan((n) => n + 1, 0),
          filter((n) => n === count),
        ),
    )
    return (count / (performance.now() - started)) * 1_000
  } finally {
    await events.close()
  }
}

/** The layout of the first entry of `topic` (undefined for an empty stream). */
async function layoutOfStream(url: string, topic: string): Promise<WireFormat | undefined> {
  const redis = rawClient(url, false)
  try {
    const [first] = await redis.xrange(streamKey(topic), '-', '+', 'COUNT', 1)
    const name = first?.[1][0]
    return name === undefined ? undefined : name === 'meta' ? 'compact' : name === ENVELOPE_FIELD ? 'one-field' : 'five-field'
  } finally {
    await redis.quit()
  }
}

/**
 * Drains a pre-filled topic of `count` entries; messages/s. Refuses a prefill in another layout than the side
 * reads (the library: the one it writes), which would measure the wrong thing.
 */
export async function drain(side: Side, url: string, topic: string, count: number, options: DrainOptions): Promise<number> {
  const found = await layoutOfStream(url, topic)
  if (found !== formatOf(side)) throw new Error(`the ${side} side reads the ${formatOf(side)} layout, but the topic was prefilled in ${found ?? 'nothing'}`)
  return side === 'library' ? drainLibrary(url, topic, count, options) : drainRaw(side, url, topic, count, options.batchSize ?? 100)
}

// ---------------------------------------------------------------- latency

export interface LatencyResult {
  readonly p50: number
  readonly p99: number
}

function percentiles(samples: number[]): LatencyResult {
  samples.sort((a, b) => a - b)
  const at = (q: number): number => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? NaN
  return { p50: at(0.5), p99: at(0.99) }
}

/** Publishes at `rate` per second for `seconds`, in ticks of 10 ms, calling `publish(sentAt)`. */
async function paced(rate: number, seconds: number, publish: (sentAt: number) => Promise<unknown>): Promise<number> {
  const perTick = rate / 100
  const ticks = seconds * 100
  const started = performance.now()
  let sent = 0
  for (let tick = 0; tick < ticks; tick++) {
    const due = started + tick * 10
    const wait = due - performance.now()
    if (wait > 0) await new Promise((r) => setTimeout(r, wait))
    for (let i = 0; i < perTick; i++) {
      publish(performance.now()).catch((e: unknown) => console.error('publish', e))
      sent++
    }
  }
  return sent
}

/** Raw pair: an autopipelined producer, a blocking reader, an autopipelined acker (one XACK per batch, not awaited). */
async function latencyRaw(side: 'raw1' | 'raw5', url: string, rate: number, seconds: number): Promise<LatencyResult> {
  const producer = rawClient(url)
  const reader = rawClient(url, false)
  const acker = rawClient(url)
  const key = streamKey(randomTopic(`lat-${side}`))
  await reader.xgroup('CREATE', key, 'raw', '$', 'MKSTREAM')
  const samples: number[] = []
  const acks: Promise<number>[] = []
  let expected = Infinity
  const consuming = (async () => {
    while (samples.length < expected) {
      const reply = (await reader.xreadgroup('GROUP', 'raw', 'c1', 'COUNT', 100, 'BLOCK', 1_000, 'STREAMS', key, '>')) as XReadReply
      const entries = reply?.[0]?.[1] ?? []
      const ids: string[] = []
      for (const [id, fields] of entries) {
        let sentAt: number
        if (side === 'raw1') {
          sentAt = (JSON.parse(fields[1] ?? '{}') as { data: { sentAt: number } }).data.sentAt
        } else {
          const record: Record<string, string> = {}
          for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i] as string] = fields[i + 1] as string
          JSON.parse(record['headers'] ?? '{}')
          sentAt = (JSON.parse(record['payload'] ?? '{}') as { sentAt: number }).sentAt
        }
        // The entry is in the handler's hands once it is parsed, as the library side's clock reads it (in the pipeline's
        // first operator, after the entries before it in the batch were delivered and its payload decoded).
        samples.push(performance.now() - sentAt)
        ids.push(id)
      }
      if (ids.length > 0) acks.push(acker.xack(key, 'raw', ...ids))
    }
  })()
  const publish =
    side === 'raw1'
      ? (sentAt: number) => producer.xadd(key, '*', ENVELOPE_FIELD, JSON.stringify({ id: randomUUID(), type: 'tick', time: Date.now(), data: { sentAt } }))
      : (sentAt: number) => producer.xadd(key, '*', 'id', randomUUID(), 'name', 'tick', 'ts', String(Date.now()), 'headers', '{}', 'payload', JSON.stringify({ sentAt }))
  expected = await paced(rate, seconds, publish)
  await consuming
  await Promise.all(acks)
  await Promise.all([producer.quit(), reader.quit(), acker.quit()])
  return percentiles(samples)
}

/**
 * Consumes `topic` with `consume().pipe(handleEach)` (batchSize 100, concurrency 100, from the latest entry) and samples
 * each event named `name` in the pipeline's first operator; `finish(expected)` resolves once `expected` samples are in.
 */
function sampledConsumer(events: EventManager, topic: string, name: string, sample: (payload: unknown) => number): { readonly samples: number[]; finish(expected: number): Promise<void> } {
  const samples: number[] = []
  let expected = Infinity
  let resolveDone: () => void = () => undefined
  const done = new Promise<void>((r) => (resolveDone = r))
  const sub = events
    .topic(topic)
    .consume({ group: 'lib', batchSize: 100, startFrom: 'latest' })
    .pipe(
      map((msg) => {
        if (msg.event.name === name) samples.push(sample(msg.event.payload))
        return msg
      }),
      handleEach(() => undefined, { concurrency: 100 }),
    )
    .subscribe(() => {
      if (samples.length >= expected) resolveDone()
    })
  return {
    samples,
    async finish(count: number): Promise<void> {
      expected = count
      if (samples.length >= expected) resolveDone()
      await done
      sub.unsubscribe()
    },
  }
}

/** The library pair; `retrySafe: false` publishes with the dedupe window off (EVENT_PUBLISH_DEDUPE_WINDOW=0). */
async function latencyLibrary(url: string, rate: number, seconds: number, retrySafe: boolean): Promise<LatencyResult> {
  const events = manager(url, retrySafe)
  const topic = randomTopic('lat-lib')
  const consumer = sampledConsumer(events, topic, 'tick', (payload) => performance.now() - (payload as { sentAt: number }).sentAt)
  await events.publish(topic, newEvent('warm.up', {})) // registers the topic
  await new Promise((r) => setTimeout(r, 300)) // the group exists before the first timed publish
  await consumer.finish(await paced(rate, seconds, (sentAt) => events.publish(topic, newEvent('tick', { sentAt }))))
  await events.close()
  return percentiles(consumer.samples)
}

/**
 * End-to-end latency (publish call to the consumer's hands) at a fixed rate, in ms: each sample is taken per message,
 * once the consumer has it decoded (raw: after its JSON.parse; library: in the pipeline's first operator).
 * `retrySafe: false` (library only) turns the publish dedupe window off.
 */
export function latency(side: Side, url: string, rate: number, seconds: number, retrySafe = true): Promise<LatencyResult> {
  return side === 'library' ? latencyLibrary(url, rate, seconds, retrySafe) : latencyRaw(side, url, rate, seconds)
}

// ---------------------------------------------------------------- delayed

/** Wall-clock time in ms with sub-millisecond resolution (the delayed queue's due times are wall-clock). */
const wallNow = (): number => performance.timeOrigin + performance.now()

/**
 * Delayed messages: about `count` events (whole ones per 10 ms tick) published with `publishWithDelay(…, delayMs)`, paced over `seconds`, consumed by
 * `consume().pipe(handleEach)`; each sample is the lateness in ms, from the event's due time (the publish call's wall
 * clock + `delayMs`) to the consumer's hands (the pipeline's first operator). Library only: the hand-written loop has no
 * delayed queue (a user would write a sorted set and a poller; the table measures none).
 */
export async function delayed(url: string, count: number, delayMs: number, seconds: number): Promise<LatencyResult> {
  const wireFormat = benchWireFormat()
  const events = createEventManager({ redisUrl: url, env: {}, ...(wireFormat === undefined ? {} : { wireFormat }) })
  const topic = randomTopic('delayed-lib')
  const consumer = sampledConsumer(events, topic, 'later', (payload) => wallNow() - (payload as { dueAt: number }).dueAt)
  await events.publish(topic, newEvent('warm.up', {})) // registers the topic
  await new Promise((r) => setTimeout(r, 300)) // the group exists before the first delayed event is due
  await consumer.finish(await paced(count / seconds, seconds, () => events.publishWithDelay(topic, newEvent('later', { dueAt: wallNow() + delayMs }), delayMs)))
  await events.close()
  return percentiles(consumer.samples)
}
