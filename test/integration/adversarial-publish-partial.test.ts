/**
 * Adversarial: one caller of a coalesced appendOnce call makes the script fail
 * part-way (its dedupe key `event:published:{topic}:<id>` holds another type,
 * so GET answers WRONGTYPE). A Lua script is not rolled back: the entries of
 * the callers before it are appended. Each caller must get the truth for its
 * own events: the ones appended resolve (or at least are not told "nothing
 * was appended"), only the poisoned caller fails with the Redis error, and
 * the callers after it are appended too (a bad event fails alone).
 */
import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { createEventManager, newEvent, type Event } from '../../src/index.js'
import type { RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { withPrivateServer } from '../support/proxied-server.js'
import { entryEventId } from '../support/entries.js'

let server: RedisServer
let direct: Redis
withPrivateServer((s) => ({ server, direct } = s), { maxRetriesPerRequest: 3 })

async function streamEventIds(topic: string): Promise<string[]> {
  const entries = await direct.xrange(`event:stream:{${topic}}`, '-', '+')
  return entries.map(([, fields]) => entryEventId(fields))
}

describe('a coalesced call that fails part-way', () => {
  it('the callers around a poisoned one: appended ones are told so, the poisoned one alone fails', async () => {
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
      const status = results.map((r) => r.status)
      console.log(`[adversarial-partial] stream holds ${JSON.stringify(stream.map((id) => [before, poisoned, after].find((e) => e.id === id)?.name))}; callers: ${JSON.stringify(results.map((r) => (r.status === 'fulfilled' ? 'ok' : (r.reason as Error).message.slice(0, 80))))}`)
      expect(status[1]).toBe('rejected')
      // whatever is in the stream, the caller must not be told it failed with a plain (nothing-appended) error
      for (const [i, e] of [before, poisoned, after].entries()) {
        if (stream.includes(e.id)) expect(status[i]).toBe('fulfilled')
      }
      // a bad event fails alone
      expect(status).toEqual(['fulfilled', 'rejected', 'fulfilled'])
      expect(stream).toEqual([before.id, after.id])
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
