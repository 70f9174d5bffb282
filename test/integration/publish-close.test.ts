/**
 * close() after publishes it accepted: every append sent (coalesced or not,
 * with or without the dedupe window) is answered before the connection quits,
 * so each such publish is appended instead of failing "outcome unknown"
 * ("Connection is closed") for a command that never reached Redis.
 */
import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { createEventManager, newEvent, type EventManagerOptions } from '../../src/index.js'
import type { RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { withPrivateServer } from '../support/proxied-server.js'

let server: RedisServer
let direct: Redis
withPrivateServer((s) => ({ server, direct } = s), { maxRetriesPerRequest: 3 })

describe('publishes accepted before close() are appended', () => {
  it.each([
    ['retry-safe (default)', {}],
    ['dedupe window off', { publishDedupeWindow: 0 }],
  ] as [string, EventManagerOptions][])('%s: single publishes and a batch in the tick of close()', async (_, options) => {
    const events = createEventManager({ redisUrl: server.url, env: {}, delayedQueueEnabled: false, commandTimeout: 5_000, ...options })
    const topic = randomName('close')
    await events.publish(topic, newEvent('warm.up', 0))
    const singles = Array.from({ length: 10 }, (_, i) => events.publish(topic, newEvent('one', i)))
    const batch = events.publishBatch(topic, Array.from({ length: 20 }, (_, i) => newEvent('many', i)))
    const closed = events.close()
    const results = await Promise.allSettled([...singles, batch])
    await closed
    expect(results.filter((r) => r.status === 'rejected').map((r) => String(r.reason))).toEqual([])
    expect(await direct.xlen(`event:stream:{${topic}}`)).toBe(31)
  })
})
