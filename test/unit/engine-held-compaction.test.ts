/**
 * The held map keeps a settled copy flagged until it is compacted (after 1,024
 * dropped copies that also outnumber the held ones): what is held, the credit,
 * redeliveries and a stop must not see the dropped copies, before or after a
 * compaction. On the memory backend.
 */
import { describe, expect, it } from 'vitest'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import type { Message } from '../../src/index.js'
import { publishMany } from '../support/contract.js'
import { name, trackManagers, waitFor } from '../support/engine.js'

const manager = trackManagers()

describe('held map compaction', () => {
  it('after thousands of settlements with a thousand held, the held count, the credit, a redelivery and a stop stay exact', async () => {
    const store = new MemoryBackend()
    const events = manager(store, { claimInterval: 0, retryBackoff: 0 })
    const topic = name('compact')
    await publishMany(events, topic, 3_500)
    const got: Message[] = []
    const subscription = events
      .topic(topic)
      .consume({ group: 'g', batchSize: 100, maxPendingMessages: 3_000 })
      .subscribe((m: Message) => got.push(m))
    await waitFor(() => got.length === 3_000, 'the credit to fill')
    const held = () => events.internals.subscriptions()[0]?.held
    expect(held()).toBe(3_000)
    // 2,500 settled (stale copies outnumber the 500 held: compacted at least once), in two rounds.
    for (const m of got.slice(0, 1_500)) void m.ack()
    expect(held()).toBe(1_500)
    for (const m of got.slice(1_500, 2_500)) void m.ack()
    expect(held()).toBe(500)
    // Credit came free: the other 500 entries are read.
    await waitFor(() => got.length === 3_500, 'the rest of the backlog')
    expect(held()).toBe(1_000)
    // A nack of a held message: its redelivered copy replaces it (same id), held once.
    const nacked = got[2_600] as Message
    void nacked.nack(new Error('again'), { delay: 0 })
    await waitFor(() => got.length === 3_501, 'the redelivery')
    const copy = got[3_500] as Message
    expect(copy.streamId).toBe(nacked.streamId)
    expect(copy.deliveryCount).toBe(2)
    expect(held()).toBe(1_000)
    // Settling the old copy again changes nothing; the new copy holds the credit.
    expect(await nacked.ack()).not.toBe('acked')
    expect(held()).toBe(1_000)
    // Everything still held is acked: nothing held, nothing pending.
    for (const m of got.slice(2_500)) if (m !== nacked) void m.ack()
    expect(held()).toBe(0)
    await waitFor(async () => (await store.groups(topic)).every((g) => g.pending === 0), 'every ack stored')
    subscription.unsubscribe()
    await waitFor(() => events.internals.subscriptions().every((s) => s.state === 'stopped'), 'the stop')
  })

  it('a stop gives back exactly the unstarted held messages, not the settled copies left in the map', async () => {
    const store = new MemoryBackend()
    const events = manager(store, { claimInterval: 0 })
    const topic = name('compact-stop')
    await publishMany(events, topic, 1_300)
    const got: Message[] = []
    const stopping = new AbortController()
    events
      .topic(topic)
      .consume({ group: 'g', batchSize: 100, maxPendingMessages: 1_300, signal: stopping.signal })
      .subscribe((m: Message) => got.push(m))
    await waitFor(() => got.length === 1_300, 'the credit to fill')
    // 1,100 settled: 1,100 dropped copies, more than 1,024 and than the 200 held: compacted.
    for (const m of got.slice(0, 1_100)) void m.ack()
    await waitFor(async () => (await store.groups(topic))[0]?.pending === 200, 'the acks stored')
    stopping.abort()
    await waitFor(() => events.internals.subscriptions().every((s) => s.state === 'stopped'), 'the stop')
    // The 200 unstarted ones were given back (still pending, their delivery not counted); the settled ones stay acked.
    const [group] = await store.groups(topic)
    expect(group?.pending).toBe(200)
    for (const m of got.slice(1_100)) expect(await m.ack()).toBe('withdrawn')
  })
})
