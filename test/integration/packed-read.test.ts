/**
 * Packed reads (issue 14): read-ahead rounds go as one script call
 * (`readPacked-1.lua`) whose reply is one msgpack string per read. On private
 * redis-servers (and a 3-master Cluster): the entries come back exactly as
 * XREADGROUP gives them (Unicode, five-field and compact layouts mixed, a
 * 5 MiB entry), hostile entries are dead-lettered with the same reasons as on
 * the XREADGROUP path, a script cache flushed again and again mid-drain
 * (NOSCRIPT) fails no read, and an ACL user who may not run scripts reads
 * with XREADGROUP (told once in the log) without failing the subscription.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Writable } from 'node:stream'
import { Redis } from 'ioredis'
import { pino } from 'pino'
import type { Logger } from '../../src/logger.js'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createEventManager, newEvent, type Event, type EventManager, type EventManagerOptions, type Message } from '../../src/index.js'
import { startRedisCluster, type RedisCluster, type RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { sleep, waitFor } from '../support/events.js'
import { withPrivateServer } from '../support/proxied-server.js'
import { recording, sum, type ReadCall } from '../support/read-calls.js'

const SHA = createHash('sha1')
  .update(readFileSync(new URL('../../src/backend/redis/lua/readPacked-1.lua', import.meta.url), 'utf8'))
  .digest('hex')

let server: RedisServer
let direct: Redis
withPrivateServer((s) => ({ server, direct } = s))

const open: EventManager[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((m) => m.close()))
})

function manager(options: EventManagerOptions = {}): EventManager {
  const m = createEventManager({ redisUrl: server.url, env: {}, delayedQueueEnabled: false, ...options })
  open.push(m)
  return m
}

/** A manager whose readers are recorded (read / readMany calls), over `carrier`'s backend. */
function recorded(carrier: EventManager, calls: ReadCall[], options: EventManagerOptions = {}): EventManager {
  const m = createEventManager({ backend: recording(carrier.backend, calls, () => 0), env: {}, delayedQueueEnabled: false, ...options })
  open.push(m)
  return m
}

/** A pino logger that keeps its records. */
function memoryLogger(): { logger: Logger; records: () => Record<string, unknown>[] } {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l.length > 0))
      callback()
    },
  })
  return { logger: pino({ level: 'debug' }, stream), records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) }
}

interface Seen {
  readonly streamId: string
  readonly event: { readonly id: string; readonly name: string; readonly headers: Record<string, string>; readonly payload: unknown }
  readonly deliveryCount: number
}

/** Consumes the topic from the beginning, acking each message, until `expected` were handled (or dead-lettered: `deadLettered`). */
async function drain(events: EventManager, topic: string, group: string, expected: number, options: { batchSize?: number; deadLettered?: () => number } = {}): Promise<Seen[]> {
  const seen: Seen[] = []
  const sub = events
    .topic(topic)
    .consume({ group, startFrom: 'beginning', batchSize: options.batchSize ?? 10, claimInterval: 0 })
    .subscribe((m: Message) => {
      const e = m.event
      let payload: unknown
      try {
        payload = e.payload
      } catch (error) {
        // A payload that does not parse (lazily decoded): dead-lettered with its reason, as `decode()` does.
        void m.deadLetter(error)
        return
      }
      seen.push({ streamId: m.streamId, event: { id: e.id, name: e.name, headers: { ...e.headers }, payload }, deliveryCount: m.deliveryCount })
      void m.ack()
    })
  try {
    await waitFor(() => seen.length + (options.deadLettered?.() ?? 0) >= expected, 30_000, `${expected} handled`)
  } finally {
    sub.unsubscribe()
  }
  return seen
}

const plain = (e: Event): Seen['event'] => ({ id: e.id, name: e.name, headers: { ...e.headers }, payload: e.payload })

async function scriptLoaded(client: Redis = direct): Promise<boolean> {
  const [exists] = (await client.call('SCRIPT', 'EXISTS', SHA)) as number[]
  return exists === 1
}

async function pending(topic: string, group: string, client: Redis = direct): Promise<number> {
  return Number((await client.xpending(`event:stream:{${topic}}`, group))[0])
}

describe('packed reads on a private redis-server', () => {
  it('Unicode names, headers and payloads in five-field and compact entries, interleaved, come back exactly as published, in order, through packed rounds', async () => {
    const fields = manager()
    const compact = manager({ wireFormat: 'compact' })
    const topic = randomName('packed-unicode')
    const group = randomName('g')
    const texts = ['plain', 'é à ç', '日本語のテキスト', '😀👍🏽🇫🇷', 'Ω≈ç√∫', '\u0000nul\u0001', 'quote " back \\ slash', 'x'.repeat(300), '\ud83d\ude00'.repeat(40)]
    const published: Event[] = []
    for (let i = 0; i < 400; i++) {
      const text = texts[i % texts.length] as string
      const event = newEvent(`name.${text.slice(0, 12)}.${i}`, { i, text, nested: { [text.slice(0, 5) || 'k']: [text, i] } }, { headers: { h: text.slice(0, 40), [`k${i}`]: 'v' } })
      published.push(event)
      // Runs of each layout, so that one packed read holds both.
      await (Math.floor(i / 7) % 2 === 0 ? fields : compact).publish(topic, event)
    }
    await direct.call('SCRIPT', 'FLUSH')
    const calls: ReadCall[] = []
    const consumer = recorded(manager(), calls)
    const seen = await drain(consumer, topic, group, published.length)
    expect(seen.map((s) => s.event)).toEqual(published.map(plain))
    expect(seen.every((s) => s.deliveryCount === 1)).toBe(true)
    const rounds = calls.filter((c) => c.kind === 'readMany' && sum(c.got) > 0)
    expect(sum(rounds.flatMap((c) => c.got ?? []))).toBeGreaterThan(200)
    expect(await scriptLoaded()).toBe(true)
    await waitFor(async () => (await pending(topic, group)) === 0, 10_000, 'every ack stored')
  })

  it('a 5 MiB entry between small ones is read whole in a packed round', async () => {
    const big = 'é'.repeat(5 * 512 * 1024) // 5 MiB of UTF-8
    const publisher = manager({ maxPayloadBytes: 8 * 1024 * 1024 })
    const topic = randomName('packed-big')
    const group = randomName('g')
    const published: Event[] = []
    for (let i = 0; i < 60; i++) published.push(newEvent('e', i === 35 ? { i, big } : { i }))
    await publisher.publishBatch(topic, published)
    const calls: ReadCall[] = []
    const consumer = recorded(manager(), calls, { maxPayloadBytes: 8 * 1024 * 1024 })
    const seen = await drain(consumer, topic, group, published.length)
    expect(seen.map((s) => (s.event.payload as { i: number }).i)).toEqual(published.map((_, i) => i))
    expect((seen[35]?.event.payload as { big: string }).big === big).toBe(true)
    // Entry 35 came in a round (the first read takes 10, then rounds of four reads of 10).
    const rounds = calls.filter((c) => c.kind === 'readMany')
    expect(sum(rounds.flatMap((c) => c.got ?? []))).toBeGreaterThanOrEqual(40)
    expect(calls[0]?.kind).toBe('read')
    expect(sum(calls[0]?.got)).toBe(10)
  })

  it('hostile and malformed entries are dead-lettered with the same reason through packed rounds as through one XREADGROUP', async () => {
    const writer = manager({ maxPayloadBytes: 1_000 })
    const topic = randomName('packed-hostile')
    const key = `event:stream:{${topic}}`
    const good = (n: number): Promise<string[]> => writer.publishBatch(topic, Array.from({ length: n }, (_, i) => newEvent('good', { i })))
    await good(25)
    const base = (id: string): string[] => ['id', id, 'name', 'bad', 'ts', '1700000000000', 'headers', '{}']
    const bad: string[] = []
    const add = async (...fields: string[]): Promise<void> => {
      bad.push((await direct.xadd(key, '*', ...fields)) as string)
      await good(3)
    }
    await add(...base('not-json'), 'payload', 'this is not json')
    await add(...base('truncated'), 'payload', '{"a": "é')
    await add('payload', '{"userId":1}')
    await add(...base('proto'), 'payload', '{"__proto__":{"polluted":1}}')
    await add('id', 'ph', 'name', 'bad', 'headers', '{"__proto__":{"p":1}}', 'payload', '{"constructor":{"prototype":{"p":1}}}')
    await add(...base('oversize'), 'payload', JSON.stringify({ blob: 'x'.repeat(2_000) }))
    await add(...base('deep'), 'payload', '['.repeat(200) + ']'.repeat(200))
    await add('meta', 'not json', 'payload', '1')
    await add('meta', '["m1"]', 'payload', '1')
    await add('meta', '["m2","n",1,{}]', 'payload', '\u00ff\u00fe not json')
    await add('meta', '["m3","n",1,{}]', 'meta', '["m3","n",1,{}]', 'payload', '1')
    await add(...base('dup'), 'payload', '1', 'payload', '2')
    await add(...base('headers'), 'payload', '1', 'headers', '[1,2]')
    await add('id', 'x', 'name', 'bad', 'ts', 'yesterday', 'headers', '{}', 'payload', '1')
    await add('\u00e9\u00e8', '\ud83d\ude00', 'f', 'v')
    await add('id', '', 'name', '', 'ts', '', 'headers', '', 'payload', '')
    await good(20)
    const total = await direct.xlen(key)

    const reasons = async (group: string, batchSize: number, calls: ReadCall[]): Promise<Map<string, string>> => {
      const events = recorded(manager(), calls, { maxPayloadBytes: 1_000 })
      let letters = 0
      const poll = setInterval(() => {
        void events.deadLetters.list(topic, { count: 1_000 }).then((l) => (letters = l.filter((x) => x.group === group).length))
      }, 50)
      try {
        await drain(events, topic, group, total, { batchSize, deadLettered: () => letters })
      } finally {
        clearInterval(poll)
      }
      await waitFor(async () => (await pending(topic, group)) === 0, 10_000, 'nothing pending')
      const list = (await events.deadLetters.list(topic, { count: 1_000 })).filter((l) => l.group === group)
      return new Map(list.map((l) => [l.originalId, l.error.split(':')[0] ?? '']))
    }

    await direct.call('SCRIPT', 'FLUSH')
    // A batch larger than the stream: one XREADGROUP reads it all, no round follows.
    const plainCalls: ReadCall[] = []
    const viaXreadgroup = await reasons(randomName('g-plain'), 1_000, plainCalls)
    expect(plainCalls.filter((c) => c.kind === 'readMany')).toEqual([])
    expect(await scriptLoaded()).toBe(false)
    const packedCalls: ReadCall[] = []
    const viaPacked = await reasons(randomName('g-packed'), 10, packedCalls)
    expect(sum(packedCalls.filter((c) => c.kind === 'readMany').flatMap((c) => c.got ?? []))).toBeGreaterThan(total / 2)
    expect(await scriptLoaded()).toBe(true)
    // All but the two __proto__ ones (the unsafe keys are dropped, the rest is a valid event).
    expect([...viaXreadgroup.keys()].sort()).toEqual(bad.filter((_, i) => i !== 3 && i !== 4).sort())
    expect([...viaPacked.entries()].sort()).toEqual([...viaXreadgroup.entries()].sort())
    expect(new Set(viaPacked.values()).size).toBeGreaterThan(3)
  })

  it('SCRIPT FLUSH again and again mid-drain: NOSCRIPT is answered by resending the script, no read fails, every entry handled once', async () => {
    const publisher = manager()
    const topic = randomName('packed-noscript')
    const group = randomName('g')
    const published: Event[] = []
    for (let i = 0; i < 3_000; i++) published.push(newEvent('e', { i }))
    for (let i = 0; i < published.length; i += 500) await publisher.publishBatch(topic, published.slice(i, i + 500))
    const { logger, records } = memoryLogger()
    const noScriptBefore = await noScriptErrors()
    const flushing = { on: true }
    const flusher = (async () => {
      const flush = new Redis(server.url)
      try {
        while (flushing.on) {
          await flush.call('SCRIPT', 'FLUSH')
          await sleep(1)
        }
      } finally {
        flush.disconnect()
      }
    })()
    let seen: Seen[]
    try {
      seen = await drain(manager({ logger }), topic, group, published.length, { batchSize: 20 })
    } finally {
      flushing.on = false
      await flusher
    }
    expect(seen.map((s) => (s.event.payload as { i: number }).i)).toEqual(published.map((_, i) => i))
    expect(seen.every((s) => s.deliveryCount === 1)).toBe(true)
    expect(records().filter((r) => r['msg'] === 'read failed; retrying')).toEqual([])
    expect(await noScriptErrors()).toBeGreaterThan(noScriptBefore)
    await waitFor(async () => (await pending(topic, group)) === 0, 10_000, 'every ack stored')
  })

  it("the README's least-privilege consumer user runs packed rounds with an empty ACL LOG", async () => {
    const line = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
      .split('\n')
      .find((l) => l.startsWith('ACL SETUSER rrs-consumer '))
    expect(line).toBeDefined()
    await direct.call('ACL', 'SETUSER', ...(line ?? '').replace('>PASSWORD', '>pw').split(' ').slice(2))
    await direct.call('ACL', 'LOG', 'RESET')
    await direct.call('SCRIPT', 'FLUSH')
    const topic = randomName('packed-role')
    const group = randomName('g')
    await manager().publishBatch(topic, Array.from({ length: 300 }, (_, i) => newEvent('e', { i })))
    const { logger, records } = memoryLogger()
    const calls: ReadCall[] = []
    const carrier = manager({ redisUrl: `redis://rrs-consumer:pw@${server.host}:${String(server.port)}`, logger })
    const seen = await drain(recorded(carrier, calls, { logger }), topic, group, 300)
    expect(seen.map((s) => (s.event.payload as { i: number }).i)).toEqual(Array.from({ length: 300 }, (_, i) => i))
    expect(sum(calls.filter((c) => c.kind === 'readMany').flatMap((c) => c.got ?? []))).toBeGreaterThan(200)
    expect(await scriptLoaded()).toBe(true)
    expect(records().filter((r) => String(r['msg']).startsWith('packed reads unavailable'))).toEqual([])
    expect(await direct.call('ACL', 'LOG')).toEqual([])
  })

  it('an ACL user without EVAL/EVALSHA reads with XREADGROUP: the subscription never fails, the fallback is logged once and the script is not tried again', async () => {
    await direct.call('ACL', 'SETUSER', 'rrs-noscript', 'on', '>pw', '~*', '&*', '+@all', '-eval', '-evalsha', '-eval_ro', '-evalsha_ro')
    await direct.call('ACL', 'LOG', 'RESET')
    const publisher = manager()
    const topic = randomName('packed-acl')
    const group = randomName('g')
    const published = Array.from({ length: 500 }, (_, i) => newEvent('e', { i }))
    await publisher.publishBatch(topic, published)
    const { logger, records } = memoryLogger()
    const calls: ReadCall[] = []
    const carrier = manager({ redisUrl: `redis://rrs-noscript:pw@${server.host}:${String(server.port)}`, logger })
    const seen = await drain(recorded(carrier, calls, { logger }), topic, group, published.length)
    expect(seen.map((s) => (s.event.payload as { i: number }).i)).toEqual(published.map((_, i) => i))
    expect(seen.every((s) => s.deliveryCount === 1)).toBe(true)
    const rounds = calls.filter((c) => c.kind === 'readMany')
    expect(rounds.length).toBeGreaterThan(3)
    expect(records().filter((r) => r['msg'] === 'read failed; retrying')).toEqual([])
    expect(records().filter((r) => String(r['msg']).startsWith('packed reads unavailable'))).toHaveLength(1)
    // One refused EVAL (ioredis sends a script's source first on a connection), never again after it.
    const log = (await direct.call('ACL', 'LOG')) as unknown[][]
    const refused = log.map((entry) => new Map(Array.from({ length: entry.length / 2 }, (_, i) => [String(entry[2 * i]), entry[2 * i + 1]])))
    expect(refused.filter((e) => e.get('username') === 'rrs-noscript').map((e) => [e.get('object'), Number(e.get('count'))])).toEqual([['eval', 1]])
  })
})

async function noScriptErrors(): Promise<number> {
  const info = await direct.info('errorstats')
  return Number(/errorstat_NOSCRIPT:count=(\d+)/.exec(info)?.[1] ?? 0)
}

describe('packed reads on a 3-master Redis Cluster', () => {
  let cluster: RedisCluster
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 })
  }, 60_000)
  afterAll(async () => {
    await cluster.stop()
  })

  it('topics on every node are drained through packed rounds on the node of their slot', async () => {
    const hosts = cluster.nodes.map((n) => `${n.host}:${n.port}`)
    const events = createEventManager({ redisHosts: hosts, env: {}, delayedQueueEnabled: false })
    open.push(events)
    const topics = Array.from({ length: 6 }, () => randomName('packed-cl'))
    for (const topic of topics) await events.publishBatch(topic, Array.from({ length: 150 }, (_, i) => newEvent('e', { i })))
    for (const topic of topics) {
      const seen = await drain(events, topic, randomName('g'), 150)
      expect(seen.map((s) => (s.event.payload as { i: number }).i)).toEqual(Array.from({ length: 150 }, (_, i) => i))
    }
    // The script ran where the streams live: loaded on every master that owns one of the topics.
    const nodes = cluster.nodes.map((n) => new Redis(n.port, n.host))
    try {
      const owners = new Set<number>()
      for (const topic of topics) {
        const slot = Number(await nodes[0]?.call('CLUSTER', 'KEYSLOT', `event:stream:{${topic}}`))
        const slots = (await nodes[0]?.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][]
        const owner = slots.find(([from, to]) => slot >= from && slot <= to)?.[2][1]
        owners.add(Number(owner))
      }
      for (const node of nodes) {
        if (!owners.has(Number(node.options.port))) continue
        expect(await scriptLoaded(node)).toBe(true)
      }
      expect(owners.size).toBeGreaterThan(1)
    } finally {
      for (const node of nodes) node.disconnect()
    }
  })
})
