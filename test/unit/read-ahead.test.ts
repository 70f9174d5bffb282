/**
 * Read-ahead (issue #10; issue 14: reads of max(batchSize, 50), and the next
 * round sent before the one just read is delivered): after a full read of new
 * entries, when the free credit allows more than one batch, the pull loop
 * sends up to 4 reads of min(max(batchSize, 50), credit left) in one round
 * (one `readMany` port call), and while the credit left after a full read has
 * room for a batch, the next round goes out (not blocking) before that read's
 * entries are emitted; a short read goes back to one blocking read. On the
 * memory backend, with the reader's calls recorded.
 */
import { describe, expect, it } from 'vitest'
import { take, tap } from 'rxjs'
import { handleEach } from '../../operators/index.js'
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
    let emittedCount = 0
    // Held, minus emitted: with `returned` (entries the reader returned before a call) it counts the entries read
    // and not yet emitted as well (none is given back here).
    const backend = recording(store, calls, () => held.length - emittedCount)
    const events = manager(backend, { claimInterval: 0 })
    const topic = name('ahead')
    await publishMany(events, topic, 1_000)
    const emitted: string[] = []
    let acked = 0
    events
      .topic(topic)
      .consume({ group: 'g', batchSize: 10, maxPendingMessages: 50 })
      .subscribe((m: Message) => {
        emittedCount++
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
    // A read of a round asks for max(batchSize, 50) entries, here bounded by the credit left.
    expect(rounds.some((c) => c.counts.join() === '50')).toBe(true)
    for (const c of calls) {
      expect(c.counts.length).toBeLessThanOrEqual(4)
      for (const n of c.counts) expect(n).toBeLessThanOrEqual(50)
      if (c.kind === 'read') expect(c.counts[0]).toBeLessThanOrEqual(10)
      // Credit: what is held, read and not yet emitted, asked for by a call in flight, plus what this call may
      // return never exceeds maxPendingMessages.
      expect(c.unsettled + c.returned + c.inFlight + sum(c.counts)).toBeLessThanOrEqual(50)
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
    const emitted: Message[] = []
    const backend = recording(store, calls, () => emitted.length)
    const events = manager(backend, { claimInterval: 0 })
    const topic = name('short')
    await publishMany(events, topic, 45)
    events
      .topic(topic)
      .consume({ group: 'g', batchSize: 10, maxPendingMessages: 100, blockMs: 60_000 })
      .subscribe((m: Message) => emitted.push(m))
    await waitFor(() => emitted.length === 45 && calls.length === 3, 'the backlog and the next blocking read', 4_000)
    // read 10 (full) → a round of 50 + 40 (the credit left, 90) that got 35 (short) → one blocking read again.
    expect(calls.map((c) => [c.kind, c.counts.join()])).toEqual([
      ['read', '10'],
      ['readMany', '50,40'],
      ['read', '10'],
    ])
    expect(calls[1]?.got).toEqual([35, 0])
    // The round went out, not blocking, before the 10 of the first read were emitted.
    expect(calls[1]).toMatchObject({ blockMs: 0, unsettled: 0, returned: 10 })
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
    expect(calls[1]?.got).toEqual([40, 0])
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

  it('unsubscribing while a round sent ahead is in flight gives back every entry it read, no delivery counted', async () => {
    const store = new MemoryBackend()
    const calls: ReadCall[] = []
    const seenA: Message[] = []
    const backend = recording(store, calls, () => seenA.length)
    const a = manager(backend, { claimInterval: 0, claimMinIdleTime: 60_000 })
    const topic = name('ahead-stop')
    const ids = await a.publishBatch(topic, Array.from({ length: 50 }, (_, n) => newEvent('job', { n })))
    // take(5): the downstream goes away in the middle of the first read's 10, with the round sent ahead in flight.
    a.topic(topic)
      .consume({ group: 'g', consumer: 'a', batchSize: 10, maxPendingMessages: 100 })
      .pipe(take(5))
      .subscribe((m: Message) => {
        seenA.push(m)
        if (m.begin()) void m.ack()
      })
    await waitFor(() => seenA.length === 5, 'a to take 5')
    // The first read (10, full), then the round of the credit left (90), sent before any of the 10 was emitted.
    expect(calls.map((c) => [c.kind, c.counts.join(), c.blockMs, c.unsettled])).toEqual([
      ['read', '10', 2_000, 0],
      ['readMany', '50,40', 0, 0],
    ])
    const b = manager(store, { claimInterval: 50, claimMinIdleTime: 60_000 })
    const seenB: Message[] = []
    b.topic(topic)
      .consume({ group: 'g', consumer: 'b', batchSize: 10, maxPendingMessages: 100 })
      .subscribe((m: Message) => {
        seenB.push(m)
        if (m.begin()) void m.ack()
      })
    await waitFor(() => seenB.length === 45, 'b to get the given-back rest', 10_000)
    expect(seenA.map((m) => m.streamId)).toEqual(ids.slice(0, 5))
    expect(seenB.map((m) => m.streamId).sort()).toEqual(ids.slice(5).sort())
    // The rest of the first read and all 40 of the round: back with no delivery counted.
    expect(seenB.map((m) => m.deliveryCount)).toEqual(Array<number>(45).fill(1))
    expect(calls.filter((c) => c.kind === 'readMany')).toHaveLength(1)
  })

  it('at the default credit (handleEach declares its concurrency), a backlog with a slow handler: held, read and unemitted, and asked for never exceed the credit', async () => {
    const store = new MemoryBackend()
    const calls: ReadCall[] = []
    let emitted = 0
    let unsettled = (): number => 0
    const events = manager(recording(store, calls, () => unsettled()), { claimInterval: 0 })
    // Held (the engine's count), minus emitted: with `returned`, the entries read and not yet emitted count too.
    unsettled = () => (events.internals.subscriptions()[0]?.held ?? 0) - emitted
    const topic = name('ahead-slow')
    await publishMany(events, topic, 1_500)
    let handled = 0
    events
      .topic(topic)
      .consume({ group: 'g' })
      .pipe(
        tap(() => emitted++),
        handleEach(async () => {
          await sleep(1)
          handled++
        }, { concurrency: 5 }),
      )
      .subscribe()
    await waitFor(() => handled === 1_500, 'the backlog handled', 30_000)
    const credit = events.internals.subscriptions()[0]?.credit ?? 0
    // handleEach's 5 plus two rounds of 4 reads of max(batchSize 10, 50).
    expect(credit).toBe(5 + 8 * 50)
    // Rounds were sent ahead (not blocking, while the entries before them were still unemitted).
    expect(calls.some((c) => c.kind === 'readMany' && c.blockMs === 0)).toBe(true)
    for (const c of calls) {
      expect(c.inFlight).toBe(0) // never more than one call of the reader in flight
      expect(c.unsettled + c.returned + c.inFlight + sum(c.counts)).toBeLessThanOrEqual(credit)
    }
    await waitFor(async () => (await store.groups(topic)).every((g) => g.pending === 0), 'every ack stored')
  })
})
