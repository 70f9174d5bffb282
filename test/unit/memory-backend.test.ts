import { afterEach, describe, expect, it } from 'vitest'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import type { GroupReader, ReadRequest } from '../../src/backend/types.js'
import { BackendError, ClosedError, GroupMissingError } from '../../src/errors.js'

/** A controllable clock. */
class Clock {
  constructor(public ms = 1_000) {}
  readonly now = (): number => this.ms
  advance(ms: number): void {
    this.ms += ms
  }
}

const T = 'orders'
const G = 'billing'
const ev = (n: number | string, extra: string[] = []): string[] => ['id', `e${n}`, 'name', 'order.placed', ...extra]
const NEW = (count = 10, blockMs = 0): ReadRequest => ({ count, blockMs, from: 'new' })
const PENDING = (count = 10, after?: string): ReadRequest => (after === undefined ? { count, blockMs: 0, from: 'pending' } : { count, blockMs: 0, from: 'pending', after })

let backends: MemoryBackend[] = []
function setup(start = 1_000): { backend: MemoryBackend; clock: Clock; reader: GroupReader } {
  const clock = new Clock(start)
  const backend = new MemoryBackend({ now: clock.now })
  backends.push(backend)
  return { backend, clock, reader: backend.createReader() }
}

afterEach(async () => {
  await Promise.all(backends.map((b) => b.close()))
  backends = []
})

describe('MemoryBackend: stream ids and append', () => {
  it('generates strictly increasing <ms>-<seq> ids from the clock', async () => {
    const { backend, clock } = setup(1_000)
    expect(await backend.append(T, [ev(1), ev(2)])).toEqual(['1000-0', '1000-1'])
    expect(await backend.append(T, [ev(3)])).toEqual(['1000-2'])
    clock.advance(5)
    expect(await backend.append(T, [ev(4)])).toEqual(['1005-0'])
    clock.ms = 900 // the clock went back: the last ms is kept, the sequence grows
    expect(await backend.append(T, [ev(5)])).toEqual(['1005-1'])
    expect(await backend.append('other', [ev(6)])).toEqual(['900-0'])
  })

  it('uses Date.now by default and starts a stream at 0-1 when the clock reads 0', async () => {
    const backend = new MemoryBackend()
    backends.push(backend)
    const before = Date.now()
    const [id] = await backend.append(T, [ev(1)])
    const ms = Number(id?.split('-')[0])
    expect(ms).toBeGreaterThanOrEqual(before)
    expect(ms).toBeLessThanOrEqual(Date.now())
    const { backend: zero } = setup(0)
    expect(await zero.append(T, [ev(1)])).toEqual(['0-1'])
  })

  it('appends all entries or none', async () => {
    const { backend } = setup()
    await expect(backend.append(T, [ev(1), ['odd'], ev(3)])).rejects.toBeInstanceOf(BackendError)
    await expect(backend.append(T, [ev(1), []])).rejects.toBeInstanceOf(BackendError)
    expect(await backend.topicInfo(T)).toEqual({ length: 0, firstId: null, lastId: null })
    expect(await backend.append(T, [])).toEqual([])
  })

  it('trims the oldest entries to maxLen and still returns every id', async () => {
    const { backend } = setup()
    await backend.append(T, [ev(1), ev(2), ev(3)])
    const ids = await backend.append(T, [ev(4), ev(5)], { maxLen: 2 })
    expect(ids).toEqual(['1000-3', '1000-4'])
    expect(await backend.topicInfo(T)).toEqual({ length: 2, firstId: '1000-3', lastId: '1000-4' })
    await expect(backend.append(T, [ev(6)], { maxLen: -1 })).rejects.toBeInstanceOf(BackendError)
  })

  it('copies fields in and out', async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    const fields = ev(1)
    await backend.append(T, [fields])
    fields[1] = 'mutated'
    const [first] = await reader.read(T, G, 'c1', NEW())
    expect(first?.fields).toEqual(ev(1))
    ;(first?.fields as string[]).push('x', 'y')
    const [again] = await reader.read(T, G, 'c1', PENDING())
    expect(again?.fields).toEqual(ev(1))
  })

  it('compacts the head of a long stream without losing order', async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    for (let i = 0; i < 500; i++) await backend.append(T, [ev(i)], { maxLen: 100 })
    const info = await backend.topicInfo(T)
    expect(info).toEqual({ length: 100, firstId: '1000-400', lastId: '1000-499' })
    const read = await reader.read(T, G, 'c', NEW(1000))
    expect(read.map((e) => e.id)).toEqual(Array.from({ length: 100 }, (_, i) => `1000-${400 + i}`))
  })
})

describe('MemoryBackend: groups and reads', () => {
  it('ensureGroup starts at the beginning or at the last id, creates the stream, and leaves an existing group alone', async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup('fresh', G, 'latest')
    expect(await backend.topicInfo('fresh')).toEqual({ length: 0, firstId: null, lastId: null })
    expect(await backend.groups('fresh')).toEqual([{ name: G, consumers: 0, pending: 0, lastDeliveredId: '0-0', lag: 0, lost: 0 }])

    await backend.append(T, [ev(1), ev(2)])
    await backend.ensureGroup(T, 'from-start', 'beginning')
    await backend.ensureGroup(T, 'from-end', 'latest')
    expect((await reader.read(T, 'from-start', 'c', NEW())).map((e) => e.id)).toEqual(['1000-0', '1000-1'])
    expect(await reader.read(T, 'from-end', 'c', NEW())).toEqual([])
    await backend.ensureGroup(T, 'from-start', 'beginning') // idempotent: does not rewind
    expect(await reader.read(T, 'from-start', 'c', NEW())).toEqual([])
    expect((await reader.read(T, 'from-start', 'c', PENDING())).length).toBe(2)
    await backend.append(T, [ev(3)])
    expect((await reader.read(T, 'from-end', 'c', NEW())).map((e) => e.id)).toEqual(['1000-2'])
  })

  it("'latest' means the last id ever generated, even when entries were trimmed", async () => {
    const { backend, reader } = setup()
    await backend.append(T, [ev(1), ev(2)])
    await backend.trim(T, 0)
    await backend.ensureGroup(T, G, 'latest')
    expect((await backend.groups(T))[0]?.lastDeliveredId).toBe('1000-1')
    await backend.append(T, [ev(3)])
    expect((await reader.read(T, G, 'c', NEW())).map((e) => e.id)).toEqual(['1000-2'])
  })

  it("reads 'new' entries up to count, each group independently, with delivery count 1", async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, 'a', 'beginning')
    await backend.ensureGroup(T, 'b', 'beginning')
    await backend.append(T, [ev(1), ev(2), ev(3)])
    const first = await reader.read(T, 'a', 'c1', NEW(2))
    expect(first).toEqual([
      { id: '1000-0', fields: ev(1), deliveryCount: 1 },
      { id: '1000-1', fields: ev(2), deliveryCount: 1 },
    ])
    expect((await reader.read(T, 'a', 'c2', NEW(2))).map((e) => e.id)).toEqual(['1000-2'])
    expect(await reader.read(T, 'a', 'c1', NEW(2))).toEqual([])
    expect((await reader.read(T, 'b', 'c1', NEW(10))).map((e) => e.id)).toEqual(['1000-0', '1000-1', '1000-2'])
    expect(await backend.consumers(T, 'a')).toEqual([
      { name: 'c1', pending: 2, idleMs: 0 },
      { name: 'c2', pending: 1, idleMs: 0 },
    ])
  })

  it("re-reads the consumer's own pending entries after an id, incrementing delivery counts", async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    await backend.append(T, [ev(1), ev(2), ev(3), ev(4)])
    await reader.read(T, G, 'c1', NEW(3))
    await reader.read(T, G, 'c2', NEW(1))
    const again = await reader.read(T, G, 'c1', PENDING())
    expect(again.map((e) => [e.id, e.deliveryCount])).toEqual([['1000-0', 2], ['1000-1', 2], ['1000-2', 2]])
    expect(again[0]?.fields).toEqual(ev(1))
    const paged = await reader.read(T, G, 'c1', PENDING(1, '1000-0'))
    expect(paged.map((e) => [e.id, e.deliveryCount])).toEqual([['1000-1', 3]])
    expect(await reader.read(T, G, 'c1', PENDING(10, '1000-2'))).toEqual([])
    expect((await reader.read(T, G, 'c2', PENDING())).map((e) => e.id)).toEqual(['1000-3'])
    expect(await reader.read(T, G, 'nobody', PENDING())).toEqual([])
  })

  it('returns pending entries whose body is gone with null fields (count unchanged)', async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    await backend.append(T, [ev(1), ev(2), ev(3)])
    await reader.read(T, G, 'c1', NEW())
    expect(await backend.deleteEntries(T, ['1000-0'])).toBe(1)
    expect(await backend.trim(T, 1)).toBe(1) // drops 1000-1
    const again = await reader.read(T, G, 'c1', PENDING())
    expect(again).toEqual([
      { id: '1000-0', fields: null, deliveryCount: 1 },
      { id: '1000-1', fields: null, deliveryCount: 1 },
      { id: '1000-2', fields: ev(3), deliveryCount: 2 },
    ])
  })

  it('rejects invalid ids instead of throwing', async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    const read = reader.read(T, G, 'c', PENDING(10, 'nope'))
    await expect(read).rejects.toBeInstanceOf(BackendError)
    await expect(backend.ack(T, G, ['x-1'])).rejects.toBeInstanceOf(BackendError)
    await expect(backend.dlqGet(T, 'bad')).rejects.toBeInstanceOf(BackendError)
    await expect(backend.claimIdle(T, G, 'c', { minIdleMs: 0, cursor: '0-0', count: 0 })).rejects.toBeInstanceOf(BackendError)
  })
})

describe('MemoryBackend: blocking reads', () => {
  it('wakes a blocked read on append, well before the block time', async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    const started = performance.now()
    const read = reader.read(T, G, 'c', NEW(10, 5_000))
    setTimeout(() => void backend.append(T, [ev(1)]), 20)
    const entries = await read
    const elapsed = performance.now() - started
    expect(entries.map((e) => e.fields)).toEqual([ev(1)])
    expect(elapsed).toBeLessThan(500)
    expect((await backend.groups(T))[0]?.pending).toBe(1)
  })

  it('is not woken by appends to another topic, and times out with no entries', async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    const started = performance.now()
    const read = reader.read(T, G, 'c', NEW(10, 80))
    await backend.append('other', [ev(1)])
    expect(await read).toEqual([])
    expect(performance.now() - started).toBeGreaterThanOrEqual(70)
  })

  it('serves blocked readers oldest first; one that finds nothing keeps waiting', async () => {
    const { backend } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    const r1 = backend.createReader()
    const r2 = backend.createReader()
    const first = r1.read(T, G, 'c1', NEW(10, 5_000))
    const second = r2.read(T, G, 'c2', NEW(10, 5_000))
    await backend.append(T, [ev(1)])
    expect((await first).map((e) => e.id)).toEqual(['1000-0'])
    let secondDone = false
    void second.then(() => (secondDone = true))
    await new Promise((r) => setTimeout(r, 10))
    expect(secondDone).toBe(false)
    await backend.append(T, [ev(2)])
    expect((await second).map((e) => e.id)).toEqual(['1000-1'])
  })

  it('wakes a blocked read with no entries when the reader or the backend closes', async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    let started = performance.now()
    const read = reader.read(T, G, 'c', NEW(10, 5_000))
    setTimeout(() => void reader.close(), 10)
    expect(await read).toEqual([])
    expect(performance.now() - started).toBeLessThan(500)
    expect(await reader.read(T, G, 'c', NEW(10, 5_000))).toEqual([]) // closed reader: no entries, no wait
    await reader.close() // idempotent

    const other = backend.createReader()
    started = performance.now()
    const blocked = other.read(T, G, 'c', NEW(10, 5_000))
    setTimeout(() => void backend.close(), 10)
    expect(await blocked).toEqual([])
    expect(performance.now() - started).toBeLessThan(500)
  })

  it('rejects a blocked read with GroupMissingError when its group or stream is deleted', async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    const read = reader.read(T, G, 'c', NEW(10, 5_000))
    expect(await backend.destroyGroup(T, G)).toBe(true)
    await expect(read).rejects.toBeInstanceOf(GroupMissingError)

    await backend.ensureGroup(T, G, 'beginning')
    const again = reader.read(T, G, 'c', NEW(10, 5_000))
    expect(await backend.deleteTopic(T)).toBe(true)
    await expect(again).rejects.toBeInstanceOf(GroupMissingError)
  })
})

describe('MemoryBackend: missing groups', () => {
  it('rejects with GroupMissingError (NOGROUP) when the group or stream does not exist', async () => {
    const { backend, reader } = setup()
    await expect(reader.read(T, G, 'c', NEW())).rejects.toBeInstanceOf(GroupMissingError)
    await backend.append(T, [ev(1)])
    await expect(reader.read(T, G, 'c', NEW())).rejects.toBeInstanceOf(GroupMissingError)
    await backend.ensureGroup(T, G, 'beginning')
    await reader.read(T, G, 'c', NEW())
    expect(await backend.destroyGroup(T, G)).toBe(true)
    expect(await backend.destroyGroup(T, G)).toBe(false)
    const missing = [
      reader.read(T, G, 'c', NEW()),
      reader.read(T, G, 'c', PENDING()),
      backend.redeliver(T, G, 'c', ['1000-0']),
      backend.renewLeases(T, G, 'c', ['1000-0']),
      backend.claimIdle(T, G, 'c', { minIdleMs: 0, cursor: '0-0', count: 10 }),
      backend.consumers(T, G),
    ]
    for (const result of await Promise.allSettled(missing)) {
      expect(result.status).toBe('rejected')
      expect((result as PromiseRejectedResult).reason).toBeInstanceOf(GroupMissingError)
    }
    const error = await reader.read(T, G, 'c', NEW()).catch((e: unknown) => e)
    expect((error as GroupMissingError).code).toBe('NO_GROUP')
    expect(await backend.ack(T, G, ['1000-0'])).toBe(0)
    expect(await backend.deleteIdleConsumer(T, G, 'c')).toBe(false)
    expect(await backend.deadLetter(T, G, [{ id: '1000-0', fields: ev(1), error: 'x', attempts: 1 }], 0)).toEqual([''])

    await backend.ensureGroup(T, G, 'beginning')
    expect(await backend.deleteTopic(T)).toBe(true)
    expect(await backend.deleteTopic(T)).toBe(false)
    await expect(reader.read(T, G, 'c', NEW())).rejects.toBeInstanceOf(GroupMissingError)
    expect(await backend.groups(T)).toEqual([])
    expect(await backend.topics()).toEqual([T]) // the registry is not a key scan: it keeps the topic
  })
})

describe('MemoryBackend: ack and dead letters', () => {
  it('acks pending ids and counts only those that were pending', async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    await backend.append(T, [ev(1), ev(2), ev(3)])
    await reader.read(T, G, 'c', NEW())
    expect(await backend.ack(T, G, [])).toBe(0)
    expect(await backend.ack(T, G, ['1000-0', '1000-1', '1000-1', '9999-0'])).toBe(2)
    expect(await backend.ack(T, G, ['1000-0'])).toBe(0)
    expect(await backend.consumers(T, G)).toEqual([{ name: 'c', pending: 1, idleMs: 0 }])
    expect((await reader.read(T, G, 'c', PENDING())).map((e) => e.id)).toEqual(['1000-2'])
  })

  it('moves pending letters to the DLQ exactly once, with every dlq_* field, and skips those not pending', async () => {
    const { backend, reader, clock } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    await backend.append(T, [ev(1, ['dlq_error', 'old', 'replay_group', 'g0']), ev(2), ev(3)])
    await reader.read(T, G, 'c', NEW())
    await backend.ack(T, G, ['1000-1'])
    clock.ms = 2_000
    const letters = [
      { id: '1000-0', fields: ev(1, ['dlq_error', 'old', 'replay_group', 'g0']), error: 'boom', attempts: 4 },
      { id: '1000-1', fields: ev(2), error: 'acked already', attempts: 1 },
      { id: '1000-2', fields: null, error: 'gone', attempts: 2 },
    ]
    const ids = await backend.deadLetter(T, G, letters, 0)
    expect(ids).toEqual(['2000-0', '', '2000-1'])
    expect(await backend.dlqGet(T, '2000-0')).toEqual({
      id: '2000-0',
      fields: [...ev(1), 'dlq_original_id', '1000-0', 'dlq_group', G, 'dlq_error', 'boom', 'dlq_attempts', '4', 'dlq_deliveries', '4', 'dlq_failed_at', '2000'],
    })
    // The entry is copied from the stream by id (as the Redis script does), whatever fields the letter carries.
    expect((await backend.dlqGet(T, '2000-1'))?.fields).toEqual([
      ...ev(3), 'dlq_original_id', '1000-2', 'dlq_group', G, 'dlq_error', 'gone', 'dlq_attempts', '2', 'dlq_deliveries', '2', 'dlq_failed_at', '2000',
    ])
    expect((await backend.groups(T))[0]?.pending).toBe(0)
    expect(await backend.deadLetter(T, G, letters, 0)).toEqual(['', '', ''])
    expect(await backend.dlqCount(T)).toBe(2)
    expect(await backend.deadLetter(T, G, [], 0)).toEqual([])
  })

  it('trims dead letters older than trimBeforeMs after moving', async () => {
    const { backend, reader, clock } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    await backend.append(T, [ev(1), ev(2)])
    await reader.read(T, G, 'c', NEW())
    await backend.deadLetter(T, G, [{ id: '1000-0', fields: ev(1), error: 'x', attempts: 1 }], 0)
    clock.ms = 5_000
    const [id] = await backend.deadLetter(T, G, [{ id: '1000-1', fields: ev(2), error: 'y', attempts: 1 }], 3_000)
    expect(id).toBe('5000-0')
    expect((await backend.dlqList(T, { count: 10 })).map((e) => e.id)).toEqual(['5000-0'])
  })
})

describe('MemoryBackend: redelivery, leases and claiming', () => {
  it('redeliver claims ids back to their owner with one more delivery, leaving out the others', async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    await backend.append(T, [ev(1), ev(2), ev(3), ev(4)])
    await reader.read(T, G, 'c1', NEW())
    await backend.ack(T, G, ['1000-1'])
    await backend.deleteEntries(T, ['1000-2'])
    // Owner-checked: another consumer cannot take them this way.
    expect(await backend.redeliver(T, G, 'c2', ['1000-0', '1000-3'])).toEqual([])
    const redelivered = await backend.redeliver(T, G, 'c1', ['1000-0', '1000-1', '1000-2', '1000-3'])
    expect(redelivered).toEqual([
      { id: '1000-0', fields: ev(1), deliveryCount: 2 },
      { id: '1000-3', fields: ev(4), deliveryCount: 2 },
    ])
    // the deleted entry left the PEL (Redis 7 XCLAIM); the others are still c1's
    expect(await backend.consumers(T, G)).toEqual([{ name: 'c1', pending: 2, idleMs: 0 }])
    expect((await backend.redeliver(T, G, 'c1', ['1000-0']))[0]?.deliveryCount).toBe(3)
    expect(await backend.redeliver(T, G, 'c1', [])).toEqual([])
  })

  it('renewLeases resets idle time only for ids still owned by the consumer, without counting a delivery', async () => {
    const { backend, reader, clock } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    await backend.append(T, [ev(1), ev(2), ev(3)])
    await reader.read(T, G, 'c1', NEW())
    await backend.claimIdle(T, G, 'c2', { minIdleMs: 0, cursor: '1000-1', count: 1 })
    clock.advance(1_000)
    expect(await backend.renewLeases(T, G, 'c1', ['1000-0', '1000-1', '1000-2', '9999-0'])).toEqual(['1000-0', '1000-2'])
    expect(await backend.renewLeases(T, G, 'ghost', ['1000-0'])).toEqual([])
    clock.advance(500)
    // only 1000-1 (owned by c2, not renewed) is idle for 1500 ms
    const claimed = await backend.claimIdle(T, G, 'c3', { minIdleMs: 1_000, cursor: '0-0', count: 10 })
    expect(claimed.entries.map((e) => [e.id, e.deliveryCount])).toEqual([['1000-1', 3]])
    const pending = await reader.read(T, G, 'c1', PENDING())
    expect(pending.map((e) => [e.id, e.deliveryCount])).toEqual([['1000-0', 2], ['1000-2', 2]]) // the renewal did not count
  })

  it('claimIdle respects minIdle, pages with its cursor and reports deleted ids', async () => {
    const { backend, reader, clock } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    await backend.append(T, [ev(1), ev(2), ev(3), ev(4), ev(5)])
    await reader.read(T, G, 'dead', NEW(3))
    clock.advance(10_000)
    await reader.read(T, G, 'dead', NEW(2)) // 1000-3, 1000-4: recent
    await backend.deleteEntries(T, ['1000-1'])
    clock.advance(10)

    const step1 = await backend.claimIdle(T, G, 'live', { minIdleMs: 5_000, cursor: '0-0', count: 2 })
    expect(step1.entries).toEqual([{ id: '1000-0', fields: ev(1), deliveryCount: 2 }])
    expect(step1.deletedIds).toEqual(['1000-1'])
    expect(step1.cursor).toBe('1000-2')

    const step2 = await backend.claimIdle(T, G, 'live', { minIdleMs: 5_000, cursor: step1.cursor, count: 2 })
    expect(step2.entries.map((e) => e.id)).toEqual(['1000-2'])
    expect(step2.deletedIds).toEqual([])
    expect(step2.cursor).toBe('0-0') // 1000-3 and 1000-4 scanned, too recent: the scan reached the end

    expect(await backend.consumers(T, G)).toEqual([
      { name: 'dead', pending: 2, idleMs: 10 },
      { name: 'live', pending: 2, idleMs: 0 },
    ])
    // claimed entries are fresh again
    expect((await backend.claimIdle(T, G, 'other', { minIdleMs: 5_000, cursor: '0-0', count: 10 })).entries).toEqual([])
    // minIdle 0 takes everything in id order
    const all = await backend.claimIdle(T, G, 'other', { minIdleMs: 0, cursor: '0', count: 10 })
    expect(all.entries.map((e) => [e.id, e.deliveryCount])).toEqual([['1000-0', 3], ['1000-2', 3], ['1000-3', 2], ['1000-4', 2]])
    expect(all.cursor).toBe('0-0')
  })

  it('claimIdle scans at most count * 10 entries per step', async () => {
    const { backend, reader, clock } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    await backend.append(T, Array.from({ length: 25 }, (_, i) => ev(i)))
    await reader.read(T, G, 'c', NEW(100))
    clock.advance(1)
    const step = await backend.claimIdle(T, G, 'x', { minIdleMs: 1_000, cursor: '0-0', count: 2 })
    expect(step.entries).toEqual([])
    expect(step.cursor).toBe('1000-20')
  })
})

describe('MemoryBackend: consumers', () => {
  it('reports idle times from the clock and deletes only consumers with nothing pending', async () => {
    const { backend, reader, clock } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    await backend.append(T, [ev(1)])
    await reader.read(T, G, 'busy', NEW())
    clock.advance(300)
    await reader.read(T, G, 'idle', NEW())
    clock.advance(200)
    expect(await backend.consumers(T, G)).toEqual([
      { name: 'busy', pending: 1, idleMs: 500 },
      { name: 'idle', pending: 0, idleMs: 200 },
    ])
    expect(await backend.deleteIdleConsumer(T, G, 'busy')).toBe(false)
    expect(await backend.deleteIdleConsumer(T, G, 'idle')).toBe(true)
    expect(await backend.deleteIdleConsumer(T, G, 'idle')).toBe(false)
    expect((await backend.consumers(T, G)).map((c) => c.name)).toEqual(['busy'])
    expect((await backend.groups(T))[0]?.consumers).toBe(1)
  })
})

describe('MemoryBackend: delayed events', () => {
  it('schedules by due time (then event id), replaces an event id, lists, counts and cancels', async () => {
    const { backend } = setup()
    await backend.schedule(T, [
      { eventId: 'c', dueAt: 300, fields: ev('c') },
      { eventId: 'b', dueAt: 100, fields: ev('b') },
      { eventId: 'a', dueAt: 300, fields: ev('a') },
      { eventId: 'd', dueAt: 50, fields: ev('d') },
    ])
    await backend.schedule(T, [{ eventId: 'd', dueAt: 400, fields: ev('d2') }])
    expect(await backend.countScheduled(T)).toBe(4)
    const listed = await backend.listScheduled(T, { count: 10 })
    expect(listed.map((e) => [e.eventId, e.dueAt])).toEqual([['b', 100], ['a', 300], ['c', 300], ['d', 400]])
    expect(listed[3]?.fields).toEqual(ev('d2'))
    expect((await backend.listScheduled(T, { offset: 1, count: 2 })).map((e) => e.eventId)).toEqual(['a', 'c'])
    expect(await backend.listScheduled(T, { offset: 10, count: 2 })).toEqual([])
    expect(await backend.listScheduled('nothing', { count: 2 })).toEqual([])
    expect(await backend.cancelScheduled(T, 'a')).toBe(true)
    expect(await backend.cancelScheduled(T, 'a')).toBe(false)
    expect(await backend.countScheduled(T)).toBe(3)
    expect(await backend.countScheduled('nothing')).toBe(0)
    expect(await backend.topics()).toEqual([T])
  })

  it('promotes due events in due order, up to the limit, and reports the next due time', async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    await backend.schedule(T, [
      { eventId: 'e3', dueAt: 300, fields: ev(3) },
      { eventId: 'e1', dueAt: 100, fields: ev(1) },
      { eventId: 'e2', dueAt: 200, fields: ev(2) },
      { eventId: 'e4', dueAt: 900, fields: ev(4) },
    ])
    expect(await backend.promoteDue(T, 50, 10)).toEqual({ promoted: 0, nextDueAt: 100 })
    expect(await backend.promoteDue(T, 500, 2)).toEqual({ promoted: 2, nextDueAt: 300 })
    expect(await backend.promoteDue(T, 500, 2)).toEqual({ promoted: 1, nextDueAt: 900 })
    expect((await reader.read(T, G, 'c', NEW())).map((e) => e.fields)).toEqual([ev(1), ev(2), ev(3)])
    expect(await backend.promoteDue(T, 1_000, 10, { maxLen: 1 })).toEqual({ promoted: 1, nextDueAt: null })
    expect(await backend.topicInfo(T)).toEqual({ length: 1, firstId: '1000-3', lastId: '1000-3' })
    expect(await backend.promoteDue('nothing', 1_000, 10)).toEqual({ promoted: 0, nextDueAt: null })
  })

  it('wakes a blocked reader when an event is promoted', async () => {
    const { backend, reader } = setup()
    await backend.ensureGroup(T, G, 'beginning')
    await backend.schedule(T, [{ eventId: 'e1', dueAt: 10, fields: ev(1) }])
    const read = reader.read(T, G, 'c', NEW(10, 5_000))
    const started = performance.now()
    await backend.promoteDue(T, 10, 10)
    expect((await read).map((e) => e.fields)).toEqual([ev(1)])
    expect(performance.now() - started).toBeLessThan(500)
  })
})

describe('MemoryBackend: dead letter queue', () => {
  async function withLetters(n: number): Promise<{ backend: MemoryBackend; reader: GroupReader; clock: Clock; dlqIds: string[] }> {
    const ctx = setup()
    await ctx.backend.ensureGroup(T, G, 'beginning')
    const ids = await ctx.backend.append(T, Array.from({ length: n }, (_, i) => ev(i)))
    await ctx.reader.read(T, G, 'c', NEW(n))
    const dlqIds: string[] = []
    for (const [i, id] of ids.entries()) {
      ctx.clock.ms = 2_000 + i * 1_000
      dlqIds.push(...(await ctx.backend.deadLetter(T, G, [{ id, fields: ev(i), error: `e${i}`, attempts: 3 }], 0)))
    }
    return { ...ctx, dlqIds }
  }

  it('lists in id order with exclusive paging, gets and counts', async () => {
    const { backend, dlqIds } = await withLetters(5)
    expect(dlqIds).toEqual(['2000-0', '3000-0', '4000-0', '5000-0', '6000-0'])
    const page1 = await backend.dlqList(T, { count: 2 })
    expect(page1.map((e) => e.id)).toEqual(['2000-0', '3000-0'])
    const page2 = await backend.dlqList(T, { count: 2, after: '3000-0' })
    expect(page2.map((e) => e.id)).toEqual(['4000-0', '5000-0'])
    const page3 = await backend.dlqList(T, { count: 2, after: '5000-0' })
    expect(page3.map((e) => e.id)).toEqual(['6000-0'])
    expect(await backend.dlqList(T, { count: 2, after: '6000-0' })).toEqual([])
    expect(await backend.dlqList('nothing', { count: 2 })).toEqual([])
    expect((await backend.dlqGet(T, '4000-0'))?.fields).toContain('e2')
    expect(await backend.dlqGet(T, '4000-1')).toBeNull()
    expect(await backend.dlqCount(T)).toBe(5)
    expect(await backend.dlqCount('nothing')).toBe(0)
  })

  it('replays a dead letter to the topic with replay_group and deletes it from the DLQ', async () => {
    const { backend, reader, clock } = await withLetters(2)
    clock.ms = 10_000
    const id = await backend.dlqReplay(T, '2000-0')
    expect(id).toBe('10000-0')
    expect(await backend.dlqGet(T, '2000-0')).toBeNull()
    expect(await backend.dlqCount(T)).toBe(1)
    const [replayed] = await reader.read(T, G, 'c', NEW())
    expect(replayed).toEqual({ id: '10000-0', fields: [...ev(0), 'replay_group', G], deliveryCount: 1 })
    expect(await backend.dlqReplay(T, '2000-0')).toBeNull()
    expect(await backend.dlqReplay('nothing', '2000-0')).toBeNull()
  })

  it('a replayed event that fails again is dead-lettered without stale dlq fields', async () => {
    const { backend, reader, clock } = await withLetters(1)
    clock.ms = 10_000
    const id = await backend.dlqReplay(T, '2000-0')
    const [entry] = await reader.read(T, G, 'c', NEW())
    const [dlqId] = await backend.deadLetter(T, G, [{ id: id as string, fields: entry?.fields ?? null, error: 'again', attempts: 1 }], 0)
    expect((await backend.dlqGet(T, dlqId as string))?.fields).toEqual([
      ...ev(0), 'dlq_original_id', '10000-0', 'dlq_group', G, 'dlq_error', 'again', 'dlq_attempts', '1', 'dlq_deliveries', '1', 'dlq_failed_at', '10000',
    ])
  })

  it('removes, trims and purges dead letters', async () => {
    const { backend } = await withLetters(6)
    expect(await backend.dlqRemove(T, ['2000-0', '2000-0', '9999-0'])).toBe(1)
    expect(await backend.dlqRemove(T, [])).toBe(0)
    expect(await backend.dlqTrim(T, 4_000)).toBe(1) // 3000-0
    expect((await backend.dlqList(T, { count: 10 })).map((e) => e.id)).toEqual(['4000-0', '5000-0', '6000-0', '7000-0'])
    expect(await backend.dlqTrim(T, 0)).toBe(0)
    expect(await backend.dlqPurge(T)).toBe(4)
    expect(await backend.dlqPurge(T)).toBe(0)
    expect(await backend.dlqCount(T)).toBe(0)
  })
})

describe('MemoryBackend: introspection and lifecycle', () => {
  it('reports topics, topic info and groups with their lag', async () => {
    const { backend, reader } = setup()
    await backend.append('zeta', [ev(1)])
    await backend.ensureGroup('alpha', G, 'beginning')
    await backend.schedule('mid', [{ eventId: 'x', dueAt: 1, fields: ev(1) }])
    expect(await backend.topics()).toEqual(['alpha', 'mid', 'zeta'])
    expect(await backend.topicInfo('missing')).toEqual({ length: 0, firstId: null, lastId: null })

    await backend.append(T, [ev(1), ev(2), ev(3), ev(4)])
    await backend.ensureGroup(T, 'slow', 'beginning')
    await backend.ensureGroup(T, 'fast', 'beginning')
    await reader.read(T, 'fast', 'c1', NEW(3))
    await reader.read(T, 'fast', 'c2', NEW(1))
    await backend.ack(T, 'fast', ['1000-0'])
    await reader.read(T, 'slow', 'c1', NEW(1))
    expect(await backend.topicInfo(T)).toEqual({ length: 4, firstId: '1000-0', lastId: '1000-3' })
    expect(await backend.groups(T)).toEqual([
      { name: 'fast', consumers: 2, pending: 3, lastDeliveredId: '1000-3', lag: 0, lost: 0 },
      { name: 'slow', consumers: 1, pending: 1, lastDeliveredId: '1000-0', lag: 3, lost: 0 },
    ])
    expect(await backend.groups('missing')).toEqual([])
    expect(await backend.ping()).toBe(0)
    expect(backend.kind).toBe('memory')
  })

  it('closes idempotently; later calls reject with ClosedError', async () => {
    const { backend } = setup()
    await backend.append(T, [ev(1)])
    await backend.close()
    await backend.close()
    await expect(backend.append(T, [ev(2)])).rejects.toBeInstanceOf(ClosedError)
    await expect(backend.topics()).rejects.toBeInstanceOf(ClosedError)
    await expect(backend.ping()).rejects.toBeInstanceOf(ClosedError)
    await expect(backend.createReader().read(T, G, 'c', NEW())).rejects.toBeInstanceOf(ClosedError)
  })
})
