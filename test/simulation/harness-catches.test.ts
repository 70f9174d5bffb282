/**
 * The simulation's liveness checks catch what they are for: a store that
 * takes acks and dead-letter moves but keeps every entry pending (a planted
 * bug) makes the engine redeliver the same entries without end, with
 * deliveries and handler runs going on all the while (no stall). The run must
 * say so: the livelock check, within the entry bound, not the budget of the
 * whole settle phase (which grows with the work left).
 */
import { describe, expect, it } from 'vitest'
import type { MemoryBackend } from '../../src/backend/memory/memory-backend.js'
import type { StreamBackend } from '../../src/backend/types.js'
import { runSeed } from './harness.js'

/** The store as the consumers see it, but its acks and dead-letter moves settle nothing. */
function settlesNothing(store: MemoryBackend): StreamBackend {
  return new Proxy<StreamBackend>(store, {
    get(target, key, receiver) {
      if (key === 'ack') return (_topic: string, _group: string, ids: readonly string[]) => Promise.resolve(ids.length)
      if (key === 'deadLetter') return (_topic: string, _group: string, letters: readonly unknown[]) => Promise.resolve(letters.map((_, i) => `1-${String(i)}`))
      const value: unknown = Reflect.get(target, key, receiver)
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value
    },
  })
}

describe('the simulation harness', () => {
  it('reports a livelock when entries are redelivered without end', { timeout: 120_000 }, async () => {
    // Seeds whose run leaves work for the final consumers (most do); the first three are enough.
    const found: string[] = []
    for (const seed of [1, 2, 3]) {
      const result = await runSeed(seed, { processStore: settlesNothing })
      found.push(...result.violations.filter((v) => /livelock: no entry settled/.test(v)))
    }
    expect(found.length, 'a livelock violation in each of the three runs').toBe(3)
  })

  it('the same seeds hold every invariant on the real store', async () => {
    for (const seed of [1, 2, 3]) expect((await runSeed(seed)).violations).toEqual([])
  })
})
