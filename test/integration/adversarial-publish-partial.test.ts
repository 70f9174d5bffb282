/**
 * Adversarial: one caller of a coalesced appendOnce call tries to make the
 * script fail part-way. With one key per event id (the earlier layout) a key
 * of another type at an event's dedupe name made GET answer WRONGTYPE after
 * the entries before it were appended (a Lua script is not rolled back). The
 * dedupe buckets are looked up before the first XADD, and the earlier
 * layout's keys (still read for a window after an upgrade) by MGET, which
 * takes a key of another type for no record: every caller must get the truth
 * for its own events, and a key of another type at the topic's dedupe bucket
 * fails every caller with the Redis error before anything is appended.
 */
import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { createEventManager, newEvent, type Event } from '../../src/index.js'
import type { RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { withPrivateServer } from '../support/proxied-server.js'

let server: RedisServer
let direct: Redis
withPrivateServer((s) => ({ server, direct } = s), { maxRetriesPerRequest: 3 })

async function streamEventIds(topic: string): Promise<string[]> {
  const entries = await direct.xrange(`event:stream:{${topic}}`, '-', '+')
  return entries.map(([, fields]) => fields[fields.indexOf('id') + 1] ?? '')
}

describe('a coalesced call that could fail part-way', () => {
  it('an odd key at one event\'s earlier-layout dedupe name: every caller is appended once and told so', async () => {
    const events = createEventManager({ redisUrl: server.url, env: {}, delayedQueueEnabled: false, commandTimeout: 5_000 })
    const topic = randomName('adv-partial')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const before = newEvent('before', 1)
      const poisoned = newEvent('poisoned', 2)
      const after = newEvent('after', 3)
      await direct.hset(`event:published:{${topic}}:${poisoned.id}`, 'x', '1')
      const results = await Promise.allSettled([before, poisoned, after].map((e: Event) => events.publish(topic, e)))
      const stream = (await streamEventIds(topic)).slice(1)
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled'])
      expect(stream).toEqual([before.id, poisoned.id, after.id])
    } finally {
      await events.close()
    }
  })

  it('the topic\'s dedupe bucket of another type: every caller gets the Redis error, nothing is appended', async () => {
    const windowMs = 60_000
    const events = createEventManager({ redisUrl: server.url, env: {}, delayedQueueEnabled: false, commandTimeout: 5_000, publishDedupeWindow: windowMs })
    const topic = randomName('adv-bucket')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const [s, us] = await direct.time()
      const bucket = Math.floor((Number(s) * 1_000 + Number(us) / 1_000) / windowMs)
      // This bucket and the next: whichever the calls below run in is the current or the previous one.
      await direct.del(`event:dedupe:{${topic}}:${windowMs}:${bucket}`)
      await direct.set(`event:dedupe:{${topic}}:${windowMs}:${bucket}`, 'x')
      await direct.set(`event:dedupe:{${topic}}:${windowMs}:${bucket + 1}`, 'x')
      const results = await Promise.allSettled([newEvent('a', 1), newEvent('b', 2), newEvent('c', 3)].map((e: Event) => events.publish(topic, e)))
      for (const r of results) expect(r.status === 'rejected' ? (r.reason as { code?: string }).code : 'fulfilled').toBe('BACKEND_ERROR')
      expect(await streamEventIds(topic)).toHaveLength(1)
    } finally {
      await events.close()
    }
  })
})

describe('a failed topic registration', () => {
  it('the events were appended: the caller is not told "a Redis error reply, nothing appended"', async () => {
    const prefix = `adv${Math.floor(Math.random() * 1e9)}:`
    const events = createEventManager({ redisUrl: server.url, env: {}, keyPrefix: prefix, delayedQueueEnabled: false, commandTimeout: 5_000 })
    const topic = randomName('adv-register')
    try {
      await direct.set(`${prefix}topics`, 'not a set')
      const e = newEvent('a', 1)
      const result = await events.publish(topic, e).then(
        (id) => ({ ok: true as const, id }),
        (error: unknown) => ({ ok: false as const, error }),
      )
      const stream = await direct.xrange(`${prefix}stream:{${topic}}`, '-', '+')
      console.log(`[adversarial-partial] registration failed: stream holds ${stream.length}; caller: ${result.ok ? 'ok' : `${(result.error as { code?: string }).code}: ${(result.error as Error).message.slice(0, 80)}`}`)
      if (stream.length > 0) expect(result.ok ? 'ok' : (result.error as { code?: string }).code).not.toBe('BACKEND_ERROR')
    } finally {
      await events.close()
    }
  })
})
