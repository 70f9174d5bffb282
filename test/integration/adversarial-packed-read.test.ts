/**
 * Adversarial: packed read-ahead rounds (readPacked-1.lua + packed-read.ts) on
 * private redis-servers. The script runs XREADGROUP '>' inside Redis: every
 * entry it reads is in the group's PEL whether or not its reply reaches the
 * engine, so every fault below checks that nothing read is left behind.
 *
 * - odd entries (1 field, 500 fields, empty, NUL, invalid UTF-8, known field
 *   names repeated) read by a packed round are exactly what one plain
 *   XREADGROUP gives for the same entries;
 * - a round's reply truncated mid-bulk or lost (a proxy of our own that holds
 *   the reply of the script call, then forwards part of it and resets):
 *   every entry handled exactly once, the cut round's entries re-read with
 *   delivery count 2, ids ascend, nothing pending after;
 * - credit 1..3 with a slow handler: credit never exceeded, each entry once;
 * - a 20 MiB entry among small ones and the byte budget: nothing left pending;
 * - XGROUP DESTROY mid-drain, and a 3-master Cluster whose topic slot is moved
 *   back and forth mid-drain (ASK/TRYAGAIN/MOVED on the script call).
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createEventManager, newEvent, type EventManager, type EventManagerOptions, type Message } from '../../src/index.js'
import type { ReadEntry } from '../../src/backend/types.js'
import { startRedisCluster, type RedisCluster, type RedisServer } from '../support/redis-server.js'
import { keySlot, masters, moveSlot, nodeClient, ownerOf } from '../support/cluster-slots.js'
import { randomName } from '../support/redis.js'
import { sleep, waitFor } from '../support/events.js'
import { withHoldingServer, type HoldingProxy } from '../support/holding-proxy.js'

/** The byte budget the packed call sends (PACKED_READ_BUDGET_BYTES): marks the script call on the wire. */
const BUDGET_MARK = Buffer.from(String(8 << 20))

const PACKED_SHA = createHash('sha1')
  .update(readFileSync(new URL('../../src/backend/redis/lua/readPacked-1.lua', import.meta.url), 'utf8'))
  .digest('hex')

let server: RedisServer
let direct: Redis
let proxy: HoldingProxy
withHoldingServer((s) => ({ server, direct, proxy } = s))
beforeAll(async () => {
  await direct.call('ACL', 'SETUSER', 'rrs-noeval', 'on', '>pw', '~*', '&*', '+@all', '-eval', '-evalsha', '-eval_ro', '-evalsha_ro')
})

const open: EventManager[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((m) => m.close()))
})

function manager(options: EventManagerOptions = {}): EventManager {
  const m = createEventManager({ redisUrl: server.url, env: {}, delayedQueueEnabled: false, ...options })
  open.push(m)
  return m
}

const streamKey = (topic: string): string => `event:stream:{${topic}}`
const isPackedCall = (chunk: Buffer): boolean => chunk.includes(BUDGET_MARK) && /eval/i.test(chunk.toString('latin1'))

async function pendingOf(topic: string, group: string): Promise<number> {
  return Number((await direct.xpending(streamKey(topic), group))[0])
}

/** Raw fields of an entry as Redis holds them, one Buffer per value. */
function bytesOf(entry: ReadEntry): string[] {
  return [...(entry.fields ?? [])]
}

describe('packed rounds read odd entries exactly as XREADGROUP does', () => {
  it('1 field, 500 fields, empty, NUL, invalid UTF-8 and repeated known field names: the same ids and fields through a packed round and a plain read', async () => {
    const events = manager()
    const topic = randomName('adv-packed-odd')
    const key = streamKey(topic)
    const invalid = [Buffer.from([0xff, 0xfe, 0x80]), Buffer.from([0xc3]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xf4, 0x90, 0x80, 0x80])]
    const shapes: (string | Buffer)[][] = [
      ['x', 'y'],
      ['', ''],
      ['payload', ''],
      ['id', 'a', 'id', 'b', 'payload', '1', 'payload', '2'],
      ['meta', 'meta', 'meta', 'meta'],
      ['n\u0000ul', '\u0000\u0000'],
      ...invalid.map((b) => [Buffer.concat([Buffer.from('k'), b]), b] as Buffer[]),
      Array.from({ length: 1_000 }, (_, i) => (i % 2 === 0 ? `f${String(i)}` : 'v'.repeat(i % 37))), // 500 fields
      ['big', 'é'.repeat(70_000)], // str32 in msgpack
      ['mid', 'x'.repeat(300)], // str16
      ['short', 'y'.repeat(40)], // str8
      ['1234', '5678'], // numeric-looking strings stay strings
    ]
    const written: string[] = []
    for (let round = 0; round < 3; round++) {
      for (const fields of shapes) written.push(String(await direct.xadd(key, '*', ...fields)))
    }
    const backend = events.backend
    const packedGroup = randomName('g-packed')
    const plainGroup = randomName('g-plain')
    await backend.ensureGroup(topic, packedGroup, 'beginning')
    await backend.ensureGroup(topic, plainGroup, 'beginning')
    await direct.call('SCRIPT', 'FLUSH')
    const reader = backend.createReader()
    try {
      const viaPacked: ReadEntry[] = []
      for (;;) {
        const reads = await reader.readMany?.(topic, packedGroup, 'c', [7, 7, 7], 0)
        const got = (reads ?? []).flat()
        if (got.length === 0) break
        viaPacked.push(...got)
      }
      const viaPlain: ReadEntry[] = []
      for (;;) {
        const got = await reader.read(topic, plainGroup, 'c', { count: 7, blockMs: 0, from: 'new' })
        if (got.length === 0) break
        viaPlain.push(...got)
      }
      expect(viaPacked.map((e) => e.id)).toEqual(written)
      expect(viaPlain.map((e) => e.id)).toEqual(written)
      expect(viaPacked.map(bytesOf)).toEqual(viaPlain.map(bytesOf))
      expect(viaPacked.every((e) => e.deliveryCount === 1)).toBe(true)
      expect(await pendingOf(topic, packedGroup)).toBe(written.length)
      // The script was used (it is in the cache): the comparison is not plain against plain.
      expect(((await direct.call('SCRIPT', 'EXISTS', PACKED_SHA)) as number[])[0]).toBe(1)
    } finally {
      await reader.close()
    }
  })
})

interface Handled {
  readonly streamId: string
  readonly n: number
  readonly deliveryCount: number
}

/** Publishes `count` events numbered 0… in batches (straight to the server). */
async function publishNumbered(topic: string, count: number, extra: (n: number) => Record<string, unknown> = () => ({})): Promise<void> {
  const publisher = manager({ maxPayloadBytes: 32 << 20 })
  for (let i = 0; i < count; i += 250) {
    await publisher.publishBatch(topic, Array.from({ length: Math.min(250, count - i) }, (_, j) => newEvent('n', { n: i + j, ...extra(i + j) })))
  }
}

describe('a packed round whose reply is cut', () => {
  it.each([
    ['lost (no byte of the reply)', 0],
    ['truncated mid-reply (half of it)', 0.5],
    ['truncated one byte before its end', -1],
  ] as const)('%s: every entry handled exactly once, the round re-read with delivery count 2, ids ascend, nothing pending', async (_what, fraction) => {
    const topic = randomName('adv-packed-cut')
    const group = randomName('g')
    const total = 400
    await publishNumbered(topic, total)
    const events = createEventManager({ redisUrl: proxy.url(), env: {}, delayedQueueEnabled: false, claimInterval: 0 })
    open.push(events)
    proxy.hold(isPackedCall)
    const handled: Handled[] = []
    const sub = events
      .topic(topic)
      .consume({ group, startFrom: 'beginning', batchSize: 10, claimInterval: 0 })
      .subscribe((m: Message) => {
        handled.push({ streamId: m.streamId, n: (m.event.payload as { n: number }).n, deliveryCount: m.deliveryCount })
        void m.ack()
      })
    try {
      await waitFor(() => proxy.held() > 0, 20_000, 'a packed round answered (and held)')
      // The whole reply is there (the script's reply is one write of Redis): wait for it to stop growing.
      let size = -1
      while (size !== proxy.held()) {
        size = proxy.held()
        await sleep(50)
      }
      proxy.cut(fraction < 0 ? size - 1 : Math.floor(size * fraction))
      await waitFor(() => handled.length >= total, 30_000, `${total} handled`)
      await sleep(200)
    } finally {
      sub.unsubscribe()
    }
    expect(handled.map((h) => h.n).sort((a, b) => a - b)).toEqual(Array.from({ length: total }, (_, i) => i))
    expect(new Set(handled.map((h) => h.streamId)).size).toBe(total)
    const ids = handled.map((h) => h.streamId)
    const ascending = ids.every((id, i) => i === 0 || compareIds(ids[i - 1] as string, id) < 0)
    expect(ascending).toBe(true)
    const redelivered = handled.filter((h) => h.deliveryCount === 2)
    // Lost or cut mid-bulk, the round fails and its entries are re-read; one byte short (only the last `\n` missing) the
    // reply may already be complete for the parser: then nothing is re-read, and every invariant above still holds.
    if (fraction >= 0) expect(redelivered.length).toBeGreaterThan(0)
    expect(redelivered.length).toBeLessThanOrEqual(40) // at most the one cut round
    expect(handled.every((h) => h.deliveryCount <= 2)).toBe(true)
    await waitFor(async () => (await pendingOf(topic, group)) === 0, 10_000, 'nothing pending')
  }, 60_000)
})

function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint]
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint]
  return am === bm ? (as === bs ? 0 : as < bs ? -1 : 1) : am < bm ? -1 : 1
}

describe('credit and budget', () => {
  it.each([1, 2, 3])('maxPendingMessages %i, batch 1, slow handler: credit never exceeded, each entry once, in order', async (credit) => {
    const topic = randomName('adv-packed-credit')
    const group = randomName('g')
    const total = 120
    await publishNumbered(topic, total)
    const events = manager()
    let unsettled = 0
    let most = 0
    const seen: number[] = []
    const sub = events
      .topic(topic)
      .consume({ group, startFrom: 'beginning', batchSize: 1, maxPendingMessages: credit, claimInterval: 0 })
      .subscribe((m: Message) => {
        unsettled++
        most = Math.max(most, unsettled)
        seen.push((m.event.payload as { n: number }).n)
        setTimeout(() => {
          unsettled--
          void m.ack()
        }, 2)
      })
    try {
      await waitFor(() => seen.length >= total, 60_000, `${total} handled`)
      await sleep(100)
    } finally {
      sub.unsubscribe()
    }
    expect(most).toBeLessThanOrEqual(credit)
    expect(seen).toEqual(Array.from({ length: total }, (_, i) => i))
    await waitFor(async () => (await pendingOf(topic, group)) === 0, 10_000, 'nothing pending')
  }, 90_000)

  it('a 20 MiB entry and a 9 MiB one among small ones (past the byte budget): each entry once, nothing pending', async () => {
    const topic = randomName('adv-packed-huge')
    const group = randomName('g')
    const total = 80
    const huge = 'h'.repeat(20 << 20)
    const large = 'l'.repeat(9 << 20)
    await publishNumbered(topic, total, (n) => (n === 23 ? { blob: huge } : n === 37 ? { blob: large } : n === 38 ? { blob: large } : {}))
    const events = manager({ maxPayloadBytes: 32 << 20 })
    const seen: { n: number; size: number; deliveryCount: number }[] = []
    const sub = events
      .topic(topic)
      .consume({ group, startFrom: 'beginning', batchSize: 10, claimInterval: 0 })
      .subscribe((m: Message) => {
        const payload = m.event.payload as { n: number; blob?: string }
        seen.push({ n: payload.n, size: payload.blob?.length ?? 0, deliveryCount: m.deliveryCount })
        void m.ack()
      })
    try {
      await waitFor(() => seen.length >= total, 60_000, `${total} handled`)
      await sleep(200)
    } finally {
      sub.unsubscribe()
    }
    expect(seen.map((s) => s.n)).toEqual(Array.from({ length: total }, (_, i) => i))
    expect(seen[23]?.size).toBe(huge.length)
    expect(seen[37]?.size).toBe(large.length)
    expect(seen.every((s) => s.deliveryCount === 1)).toBe(true)
    await waitFor(async () => (await pendingOf(topic, group)) === 0, 10_000, 'nothing pending')
  }, 120_000)
})

describe('the group changes under a drain', () => {
  it('XGROUP DESTROY mid-drain (then recreated by the engine from the beginning): the subscription does not fail, every entry handled at least once, nothing pending after', async () => {
    const topic = randomName('adv-packed-destroy')
    const group = randomName('g')
    const total = 1_500
    await publishNumbered(topic, total)
    const events = manager()
    const seen = new Set<number>()
    let errored: unknown
    const sub = events
      .topic(topic)
      .consume({ group, startFrom: 'beginning', batchSize: 20, claimInterval: 0 })
      .subscribe({
        next: (m: Message) => {
          seen.add((m.event.payload as { n: number }).n)
          void m.ack()
        },
        error: (error: unknown) => (errored = error),
      })
    try {
      await waitFor(() => seen.size >= 200, 30_000, '200 handled')
      expect(await direct.xgroup('DESTROY', streamKey(topic), group)).toBe(1)
      await waitFor(() => seen.size >= total || errored !== undefined, 60_000, `${total} handled`)
      await sleep(200)
    } finally {
      sub.unsubscribe()
    }
    expect(errored).toBeUndefined()
    expect(seen.size).toBe(total)
    await waitFor(async () => (await pendingOf(topic, group)) === 0, 10_000, 'nothing pending')
  }, 90_000)
})

describe('a Cluster slot migration mid-drain', () => {
  let cluster: RedisCluster
  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 })
  }, 60_000)
  afterAll(async () => {
    await cluster.stop()
  })

  it('the topic slot moved back and forth while packed rounds drain it: every entry handled, none twice without a fault, nothing pending, no failure', async () => {
    const hosts = cluster.nodes.map((n) => `${n.host}:${n.port}`)
    const events = createEventManager({ redisHosts: hosts, env: {}, delayedQueueEnabled: false })
    open.push(events)
    const topic = randomName('adv-packed-move')
    const group = randomName('g')
    const total = 4_000
    for (let i = 0; i < total; i += 500) await events.publishBatch(topic, Array.from({ length: 500 }, (_, j) => newEvent('n', { n: i + j })))
    const node = nodeClient(cluster.nodes[0]?.port as number)
    const slot = await keySlot(node, streamKey(topic))
    const home = await ownerOf(node, slot)
    const away = (await masters(node)).find((m) => m.port !== home.port)?.port as number
    const counts = new Map<number, number>()
    let errored: unknown
    let movedMidDrain = 0
    const sub = events
      .topic(topic)
      // Credit 30 over batches of 10 (packed rounds of [10, 10] after a full read), each ack 20 ms later: about 1,500/s,
      // so that the drain spans the moves.
      .consume({ group, startFrom: 'beginning', batchSize: 10, maxPendingMessages: 30, claimInterval: 0 })
      .subscribe({
        next: (m: Message) => {
          const n = (m.event.payload as { n: number }).n
          counts.set(n, (counts.get(n) ?? 0) + 1)
          setTimeout(() => void m.ack(), 20)
        },
        error: (error: unknown) => (errored = error),
      })
    try {
      for (let round = 0; round < 4 && counts.size < total; round++) {
        await moveSlot(cluster, slot, round % 2 === 0 ? away : home.port, { pauseMs: 100 })
        if (counts.size < total) movedMidDrain++
      }
      await waitFor(() => counts.size >= total || errored !== undefined, 60_000, `${total} handled`)
      await sleep(300)
    } finally {
      sub.unsubscribe()
      node.disconnect()
    }
    expect(movedMidDrain).toBeGreaterThan(0)
    expect(errored).toBeUndefined()
    expect(counts.size).toBe(total)
    expect([...counts.entries()].filter(([, c]) => c !== 1)).toEqual([])
    const client = new Redis(cluster.nodes[0]?.port as number)
    try {
      const owner = await ownerOf(client, slot)
      const at = new Redis(owner.port)
      try {
        await waitFor(async () => Number((await at.xpending(streamKey(topic), group))[0]) === 0, 20_000, 'nothing pending')
      } finally {
        at.disconnect()
      }
    } finally {
      client.disconnect()
    }
  }, 120_000)
})
