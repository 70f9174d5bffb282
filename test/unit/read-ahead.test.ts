/**
 * Read-ahead (issue #10, "Read-ahead pipelines up to 4 reads, each asking for
 * min(batchSize, credit)"): after a full read of new entries, when the free
 * credit allows more than one batch, the pull loop sends up to 4 reads in one
 * round (one `readMany` port call); a short read goes back to one blocking
 * read. On the memory backend, with the reader's calls recorded.
 */
import { describe, expect, it } from 'vitest'
import { take } from 'rxjs'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import { newEvent, type Message } from '../../src/index.js'
import { publishMany } from '../support/contract.js'
import { name, sleep, trackManagers, waitFor } from '../support/engine.js'
import { recording, sum, type ReadCall } from '../support/read-calls.js'

const manager = trackManagers()


describe('read-ahead', () => {
  it('a backlog of 1,000 with batchSize 10 and free credit is read in rounds of up to 4 reads, in id order, each entry once, the credit never exceeded', async () => {
    const store = new MemoryBackend()
    const calls: ReadCall[] = []
    const held: Message[] = []
    const backend = recording(store, calls, () => held.length)
    const events = manager(backend, { claimInterval: 0 })
    const topic = name('ahead')
    await publishMany(events, topic, 1_000)
    const emitted: string[] = []
    let acked = 0
    events
      .topic(topic)
      .consume({ group: 'g', batchSize: 10, maxPendingMessages: 50 })
      .subscribe((m: Message) => {
        emitted.push(m.streamId)
        held.push(m)
      })
    // Whenever the subscription is out of credit (50 held), everything held is acked at once.
    while (acked < 1_000) {
      await waitFor(() => held.length === 50 || acked + held.length === 1_000, 'the credit to fill')
      await sleep(5)
      const batch = held.splice(0)
      acked += batch.length
      for (const m of batch) void m.ack()
    }
    const rounds = calls.filter((c) => c.kind === 'readMany')
    // Without read-ahead each call returns at most 10 entries: 100 calls at least.
    const productive = calls.filter((c) => sum(c.got) > 0)
    expect(productive.length).toBeLessThanOrEqual(45)
    expect(rounds.length).toBeGreaterThanOrEqual(15)
    expect(rounds.some((c) => c.counts.join() === '10,10,10,10')).toBe(true)
    for (const c of calls) {
      expect(c.counts.length).toBeLessThanOrEqual(4)
      for (const n of c.counts) expect(n).toBeLessThanOrEqual(10)
      // Credit: what is held plus what the call may return never exceeds maxPendingMessages.
      expect(c.unsettled + sum(c.counts)).toBeLessThanOrEqual(50)
    }
    // A round is sent only after a full read (the previous call returned all it asked for).
    for (let i = 1; i < calls.length; i++) {
      if (calls[i]?.kind === 'readMany') expect(sum(calls[i - 1]?.got)).toBe(sum(calls[i - 1]?.counts))
    }
    expect(emitted).toHaveLength(1_000)
    expect(new Set(emitted).size).toBe(1_000)
    const sorted = [...emitted].sort((a, b) => {
      const [ma, sa] = a.split('-').map(Number) as [number, number]
      const [mb, sb] = b.split('-').map(Number) as [number, number]
      return ma - mb || sa - sb
    })
    expect(emitted).toEqual(sorted)
    await waitFor(async () => (await store.groups(topic)).every((g) => g.pending === 0), 'every ack stored')
  })

  it('a short read ends read-ahead: the next call is one blocking read, and a full one starts it again', async () => {
    const store = new MemoryBackend()
    const calls: ReadCall[] = []
    const backend = recording(store, calls, () => 0)
    const events = manager(backend, { claimInterval: 0 })
    const topic = name('short')
    await publishMany(events, topic, 45)
    const emitted: Message[] = []
    events
      .topic(topic)
      .consume({ group: 'g', batchSize: 10, maxPendingMessages: 100, blockMs: 60_000 })
      .subscribe((m: Message) => emitted.push(m))
    await waitFor(() => emitted.length === 45 && calls.length === 3, 'the backlog and the next blocking read', 4_000)
    // read 10 (full) → a round of 4 × 10 that got 35 (short) → one blocking read again.
    expect(calls.map((c) => [c.kind, c.counts.join()])).toEqual([
      ['read', '10'],
      ['readMany', '10,10,10,10'],
      ['read', '10'],
    ])
    expect(calls[1]?.got).toEqual([10, 10, 10, 5])
    // 30 more while that read blocks (the memory store wakes it at the first entry appended, so it comes back short).
    await publishMany(events, topic, 30)
    await waitFor(() => emitted.length === 75 && calls[calls.length - 1]?.got === undefined, 'the 30 and the next blocking read')
    const later = calls.slice(2)
    // Read-ahead starts again after a full read, and each round follows a full call.
    expect(later.some((c) => c.kind === 'readMany')).toBe(true)
    for (let i = 2; i < calls.length; i++) {
      const previous = calls[i - 1]
      if (calls[i]?.kind === 'readMany') expect(sum(previous?.got)).toBe(sum(previous?.counts))
      // After a short call, one single read.
      if (sum(previous?.got) < sum(previous?.counts)) expect(calls[i]?.kind).toBe('read')
    }
    await Promise.all(emitted.map((m) => m.ack()))
  })

  it('a reader without readMany (another port implementation) is read one batch at a time, the backlog drained all the same', async () => {
    const store = new MemoryBackend()
    const calls: ReadCall[] = []
    const events = manager(recording(store, calls, () => 0, false), { claimInterval: 0 })
    const topic = name('no-verb')
    await publishMany(events, topic, 200)
    const emitted: string[] = []
    events
      .topic(topic)
      .consume({ group: 'g', batchSize: 10, maxPendingMessages: 100 })
      .subscribe((m: Message) => {
        emitted.push(m.streamId)
        if (m.begin()) void m.ack()
      })
    await waitFor(() => emitted.length === 200, 'the backlog')
    expect(new Set(emitted).size).toBe(200)
    expect(calls.every((c) => c.kind === 'read' && c.counts.length === 1 && (c.counts[0] ?? 0) <= 10)).toBe(true)
    expect(calls.filter((c) => sum(c.got) > 0).length).toBeGreaterThanOrEqual(20)
  })

  it('unsubscribing mid-round gives the unemitted rest back at once, its delivery counts unchanged', async () => {
    const store = new MemoryBackend()
    const calls: ReadCall[] = []
    const backend = recording(store, calls, () => 0)
    const a = manager(backend, { claimInterval: 0, claimMinIdleTime: 60_000 })
    const topic = name('giveback')
    const ids = await a.publishBatch(topic, Array.from({ length: 50 }, (_, n) => newEvent('job', { n })))
    const seenA: Message[] = []
    // take(25): the 25th emission is the 15th entry of the round after the first read of 10.
    a.topic(topic)
      .consume({ group: 'g', consumer: 'a', batchSize: 10, maxPendingMessages: 100 })
      .pipe(take(25))
      .subscribe((m: Message) => {
        seenA.push(m)
        if (m.begin()) void m.ack()
      })
    await waitFor(() => seenA.length === 25, 'a to take 25')
    expect(calls.map((c) => c.kind)).toEqual(['read', 'readMany'])
    expect(calls[1]?.got).toEqual([10, 10, 10, 10])
    // Another consumer of the group (claiming every 50 ms, claimMinIdleTime a minute) gets the 25 unemitted at once.
    const b = manager(store, { claimInterval: 50, claimMinIdleTime: 60_000 })
    const seenB: Message[] = []
    b.topic(topic)
      .consume({ group: 'g', consumer: 'b', batchSize: 10, maxPendingMessages: 100 })
      .subscribe((m: Message) => {
        seenB.push(m)
        if (m.begin()) void m.ack()
      })
    await waitFor(() => seenB.length === 25, 'b to get the given-back rest', 10_000)
    expect(seenA.map((m) => m.streamId)).toEqual(ids.slice(0, 25))
    expect(seenB.map((m) => m.streamId).sort()).toEqual(ids.slice(25).sort())
    // No delivery counted against what a never saw.
    expect(seenB.map((m) => m.deliveryCount)).toEqual(Array<number>(25).fill(1))
  })
})
