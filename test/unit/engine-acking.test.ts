/**
 * An entry acked here whose XACK has not returned is still pending and idle:
 * a claim scan of this consumer finds it and must not run it again (the ids
 * in flight are kept per XACK batch, dropped once the batch's XACK settled).
 * On the memory backend, with acks held back by a gate.
 */
import { describe, expect, it } from 'vitest'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import type { Message } from '../../src/index.js'
import { publishMany } from '../support/contract.js'
import { name, sleep, trackManagers, waitFor } from '../support/engine.js'

const manager = trackManagers()

class GatedAcks extends MemoryBackend {
  open: () => void = () => undefined
  #gate: Promise<void> = new Promise((resolve) => (this.open = resolve))
  claims = 0
  override async ack(topic: string, group: string, ids: readonly string[]): Promise<number> {
    await this.#gate
    return super.ack(topic, group, ids)
  }
  override claimIdle(...args: Parameters<MemoryBackend['claimIdle']>): ReturnType<MemoryBackend['claimIdle']> {
    this.claims++
    return super.claimIdle(...args)
  }
}

describe('acks in flight', () => {
  it('claim scans while two XACK batches are held back run none of their entries again; after the XACKs nothing is pending', async () => {
    const store = new GatedAcks()
    const events = manager(store, { claimInterval: 20, claimMinIdleTime: 30 })
    const topic = name('acking')
    await publishMany(events, topic, 30)
    const runs = new Map<string, number>()
    const got: Message[] = []
    events
      .topic(topic)
      .consume({ group: 'g', batchSize: 10 })
      .subscribe((m: Message) => {
        runs.set(m.streamId, (runs.get(m.streamId) ?? 0) + 1)
        got.push(m)
      })
    await waitFor(() => got.length === 30, 'all 30 delivered')
    // Two XACK batches (two ticks), both held back at the store.
    for (const m of got.slice(0, 15)) void m.ack()
    await sleep(5)
    const settled = got.slice(15).map((m) => m.ack())
    // Idle past claimMinIdleTime, unleased (no longer held): several claim scans find them pending.
    const before = store.claims
    await waitFor(() => store.claims >= before + 3, 'claim scans while the acks are in flight')
    await sleep(50)
    expect(got).toHaveLength(30)
    expect([...runs.values()].every((n) => n === 1)).toBe(true)
    store.open()
    expect(await Promise.all(settled)).toEqual(Array.from({ length: 15 }, () => 'acked'))
    await waitFor(async () => (await store.groups(topic))[0]?.pending === 0, 'every ack stored')
    // Claims after the XACKs returned find nothing of them either.
    const after = store.claims
    await waitFor(() => store.claims >= after + 2, 'more claim scans')
    expect(got).toHaveLength(30)
  })
})
