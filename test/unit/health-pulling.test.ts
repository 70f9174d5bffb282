/**
 * A subscription is `pulling` only once a read of new entries succeeded
 * (issue 15, item 2): when every read of new entries fails while re-reads of
 * its own pending entries succeed (and keep its last read fresh), health()
 * never says pulling and is not ok.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import type { GroupReader, ReadEntry, ReadRequest, StreamBackend } from '../../src/backend/types.js'
import { createEventManager, newEvent, type EventManager } from '../../src/index.js'

const managers: EventManager[] = []
afterEach(async () => {
  await Promise.all(managers.splice(0).map((m) => m.close()))
})

/** A memory backend whose readers fail every read of new entries. */
function newReadsFail(inner: MemoryBackend): StreamBackend {
  return new Proxy(inner, {
    get(target, property, receiver) {
      if (property !== 'createReader') {
        const value: unknown = Reflect.get(target, property, receiver)
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      }
      return (): GroupReader => {
        const reader = target.createReader()
        return new Proxy(reader, {
          get(r, p, rr) {
            if (p === 'read') {
              return (topic: string, group: string, consumer: string, request: ReadRequest): Promise<ReadEntry[]> =>
                request.from === 'new' ? Promise.reject(new Error('read of new entries refused')) : r.read(topic, group, consumer, request)
            }
            const v: unknown = Reflect.get(r, p, rr)
            return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(r) : v
          },
        })
      }
    },
  })
}

describe('pulling means a read of new entries succeeded', () => {
  it('with every read of new entries failing, health() is never ok and never pulling, though pending re-reads succeed', async () => {
    const inner = new MemoryBackend()
    const events = createEventManager({ backend: newReadsFail(inner), env: {} })
    managers.push(events)
    await events.publish('t', newEvent('x', 1))
    let handled = 0
    events
      .topic('t')
      .consume({ group: 'g', consumer: 'c1', blockMs: 20, drainTimeout: 0 })
      .subscribe(() => handled++)
    const seen: string[] = []
    let lastReadSeen = false
    for (let i = 0; i < 40; i++) {
      const report = await events.health({ timeoutMs: 200 })
      const s = report.subscriptions[0]
      if (s !== undefined) {
        seen.push(s.state)
        if (s.lastReadAt !== null) lastReadSeen = true
        if (s.state !== 'starting') expect(report.ok).toBe(false)
      }
      await new Promise((r) => setTimeout(r, 25))
    }
    expect(seen).toContain('reconnecting')
    expect(seen).not.toContain('pulling')
    expect(lastReadSeen).toBe(true) // the pending re-reads succeeded: the last read alone says nothing
    expect(handled).toBe(0)
  })
})
