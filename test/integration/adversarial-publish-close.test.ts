/**
 * Adversarial: publish() calls accepted before close() (in the same tick, or
 * a microtask before it) are coalesced for a flush on process.nextTick; close()
 * must not close the connection under them. Each must be appended (or refused
 * with ClosedError); none may be left "outcome unknown" while never sent.
 * Calls after close() get ClosedError.
 */
import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { ClosedError, createEventManager, newEvent, type EventManager, type EventManagerOptions } from '../../src/index.js'
import type { RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { withPrivateServer } from '../support/proxied-server.js'
import { entryEventId } from '../support/entries.js'

let server: RedisServer
let direct: Redis
withPrivateServer((s) => ({ server, direct } = s), { maxRetriesPerRequest: 3 })

function manager(options: EventManagerOptions = {}): EventManager {
  return createEventManager({ redisUrl: server.url, env: {}, delayedQueueEnabled: false, commandTimeout: 5_000, ...options })
}

async function streamEventIds(topic: string): Promise<string[]> {
  const entries = await direct.xrange(`event:stream:{${topic}}`, '-', '+')
  return entries.map(([, fields]) => entryEventId(fields))
}

const outcome = <T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> =>
  p.then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error }))

describe('coalesced publish and close()', () => {
  it('publish() calls made in the same tick as close() are appended (or refused with ClosedError), never left unknown; later calls get ClosedError', async () => {
    const events = manager()
    const topic = randomName('adv-close')
    await events.publish(topic, newEvent('warm.up', 0))
    const before = Array.from({ length: 20 }, (_, i) => newEvent('before', i))
    const pending = before.map((e) => outcome(events.publish(topic, e)))
    const batch = outcome(events.publishBatch(topic, [newEvent('b', 1), newEvent('b', 2)]))
    const closing = events.close()
    const after = outcome(events.publish(topic, newEvent('after', 1)))
    const afterBatch = outcome(events.publishBatch(topic, [newEvent('after', 2)]))
    const afterDelayed = outcome(events.publishWithDelay(topic, newEvent('after', 3), 10))
    const results = await Promise.all(pending)
    await closing
    for (const r of results) {
      if (!r.ok) expect(r.error).toBeInstanceOf(ClosedError)
    }
    const appended = results.filter((r) => r.ok).length
    const b = await batch
    for (const r of [await after, await afterBatch, await afterDelayed]) {
      expect(r.ok).toBe(false)
      expect((r as { error: unknown }).error).toBeInstanceOf(ClosedError)
    }
    const ids = (await streamEventIds(topic)).slice(1)
    expect(ids.filter((id) => before.some((e) => e.id === id))).toHaveLength(appended)
    expect(ids).toHaveLength(appended + (b.ok ? 2 : 0))
    // the calls made before close() were accepted: all of them should be appended
    expect(appended).toBe(20)
    expect(b.ok).toBe(true)
  })
})

