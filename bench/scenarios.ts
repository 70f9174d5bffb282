/**
 * The benchmark scenarios, each as the library and as raw ioredis doing the
 * same work. Every scenario uses fresh random topics and groups.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { Redis } from 'ioredis'
import { firstValueFrom, filter, map, scan } from 'rxjs'
import { createEventManager, newEvent, type EventManager } from '../src/index.js'
import { handleEach } from '../operators/index.js'

const PAYLOAD = { userId: 123, email: 'user@example.com', plan: 'premium', tags: ['a', 'b', 'c'] }

export const randomTopic = (prefix: string): string => `bench-${prefix}-${randomBytes(4).toString('hex')}`
const streamKey = (topic: string): string => `event:stream:{${topic}}`

/** The same wire fields the library writes, built by hand as a raw ioredis user would. */
function rawFields(i: number): string[] {
  return ['id', randomUUID(), 'name', 'user.action', 'ts', String(Date.now()), 'headers', '{}', 'payload', JSON.stringify({ ...PAYLOAD, i })]
}

function manager(url: string): EventManager {
  return createEventManager({ redisUrl: url, env: {}, delayedQueueEnabled: false })
}

function rawClient(url: string, autoPipelining = true): Redis {
  return new Redis(url, { enableAutoPipelining: autoPipelining, maxRetriesPerRequest: null })
}

/** Runs `total` tasks with `concurrency` workers; resolves to messages per second. */
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

export async function publishOneRaw(url: string, count: number, concurrency: number): Promise<number> {
  const redis = rawClient(url)
  const key = streamKey(randomTopic('a-raw'))
  try {
    return await pool(count, concurrency, (i) => redis.xadd(key, '*', ...rawFields(i)))
  } finally {
    await redis.quit()
  }
}

export async function publishOneLibrary(url: string, count: number, concurrency: number): Promise<number> {
  const events = manager(url)
  const topic = randomTopic('a-lib')
  try {
    return await pool(count, concurrency, (i) => events.publish(topic, newEvent('user.action', { ...PAYLOAD, i })))
  } finally {
    await events.close()
  }
}

export async function publishBatchRaw(url: string, count: number, size: number): Promise<number> {
  const redis = rawClient(url, false)
  const key = streamKey(randomTopic('b-raw'))
  try {
    return await pool(count / size, 8, async (b) => {
      const pipeline = redis.pipeline()
      for (let i = 0; i < size; i++) pipeline.xadd(key, '*', ...rawFields(b * size + i))
      await pipeline.exec()
    }) * size
  } finally {
    await redis.quit()
  }
}

export async function publishBatchLibrary(url: string, count: number, size: number): Promise<number> {
  const events = manager(url)
  const topic = randomTopic('b-lib')
  try {
    return await pool(count / size, 8, (b) =>
      events.publishBatch(topic, Array.from({ length: size }, (_, i) => newEvent('user.action', { ...PAYLOAD, i: b * size + i }))),
    ) * size
  } finally {
    await events.close()
  }
}

/** Fills a fresh topic with `count` events (raw pipelined XADD) and returns its name. */
export async function prefill(url: string, count: number): Promise<string> {
  const redis = rawClient(url, false)
  const topic = randomTopic('fill')
  const key = streamKey(topic)
  try {
    for (let start = 0; start < count; start += 1_000) {
      const pipeline = redis.pipeline()
      for (let i = start; i < Math.min(count, start + 1_000); i++) pipeline.xadd(key, '*', ...rawFields(i))
      await pipeline.exec()
    }
    return topic
  } finally {
    await redis.quit()
  }
}

/** The hand-written loop: XREADGROUP COUNT n, parse every entry, one XACK per batch. */
export async function consumeRaw(url: string, topic: string, count: number, batchSize: number): Promise<number> {
  const redis = rawClient(url, false)
  const key = streamKey(topic)
  const group = 'raw'
  try {
    await redis.xgroup('CREATE', key, group, '0', 'MKSTREAM')
    const started = performance.now()
    let handled = 0
    while (handled < count) {
      const reply = (await redis.xreadgroup('GROUP', group, 'c1', 'COUNT', batchSize, 'BLOCK', 1_000, 'STREAMS', key, '>')) as [string, [string, string[]][]][] | null
      const entries = reply?.[0]?.[1] ?? []
      const ids: string[] = []
      for (const [id, fields] of entries) {
        const record: Record<string, string> = {}
        for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i]!] = fields[i + 1]!
        const event = { id: record['id'], name: record['name'], headers: JSON.parse(record['headers'] ?? '{}') as unknown, payload: JSON.parse(record['payload'] ?? 'null') as unknown }
        if (event.name === undefined) throw new Error('bad entry')
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

export async function consumeLibrary(url: string, topic: string, count: number, batchSize: number, concurrency: number): Promise<number> {
  const events = manager(url)
  try {
    const started = performance.now()
    await firstValueFrom(
      events
        .topic(topic)
        .consume({ group: 'lib', batchSize, blockMs: 1_000 })
        .pipe(
          handleEach(() => undefined, { concurrency }),
          scan((n) => n + 1, 0),
          filter((n) => n === count),
        ),
    )
    return (count / (performance.now() - started)) * 1_000
  } finally {
    await events.close()
  }
}

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

export async function latencyRaw(url: string, rate: number, seconds: number): Promise<LatencyResult> {
  const producer = rawClient(url)
  const reader = rawClient(url, false)
  const acker = rawClient(url)
  const key = streamKey(randomTopic('d-raw'))
  await reader.xgroup('CREATE', key, 'raw', '$', 'MKSTREAM')
  const samples: number[] = []
  const acks: Promise<number>[] = []
  let expected = Infinity
  const consuming = (async () => {
    while (samples.length < expected) {
      const reply = (await reader.xreadgroup('GROUP', 'raw', 'c1', 'COUNT', 100, 'BLOCK', 1_000, 'STREAMS', key, '>')) as [string, [string, string[]][]][] | null
      const entries = reply?.[0]?.[1] ?? []
      const now = performance.now()
      const ids: string[] = []
      for (const [id, fields] of entries) {
        const record: Record<string, string> = {}
        for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i]!] = fields[i + 1]!
        const payload = JSON.parse(record['payload'] ?? '{}') as { sentAt: number }
        samples.push(now - payload.sentAt)
        ids.push(id)
      }
      if (ids.length > 0) acks.push(acker.xack(key, 'raw', ...ids))
    }
  })()
  expected = await paced(rate, seconds, (sentAt) => producer.xadd(key, '*', 'id', randomUUID(), 'name', 'tick', 'ts', String(Date.now()), 'headers', '{}', 'payload', JSON.stringify({ sentAt })))
  await consuming
  await Promise.all(acks)
  await Promise.all([producer.quit(), reader.quit(), acker.quit()])
  return percentiles(samples)
}

export async function latencyLibrary(url: string, rate: number, seconds: number): Promise<LatencyResult> {
  const events = manager(url)
  const topic = randomTopic('d-lib')
  const samples: number[] = []
  let expected = Infinity
  let resolveDone: () => void = () => undefined
  const done = new Promise<void>((r) => (resolveDone = r))
  const sub = events
    .topic(topic)
    .consume({ group: 'lib', batchSize: 100, startFrom: 'latest' })
    .pipe(
      map((msg) => {
        samples.push(performance.now() - (msg.event.payload as { sentAt: number }).sentAt)
        return msg
      }),
      handleEach(() => undefined, { concurrency: 100 }),
    )
    .subscribe(() => {
      if (samples.length >= expected) resolveDone()
    })
  await new Promise((r) => setTimeout(r, 200)) // the group exists before the first publish
  expected = await paced(rate, seconds, (sentAt) => events.publish(topic, newEvent('tick', { sentAt })))
  await done
  sub.unsubscribe()
  await events.close()
  return percentiles(samples)
}
