/**
 * The operator state verbs of the Redis backend (window and join state,
 * issue 12 item 8): one script per change, keys under the topic's hash tag,
 * expiring, only ever extended; the memory backend answers the same.
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import type { StreamBackend } from '../../src/backend/types.js'
import { randomName, redisUrl } from '../support/redis.js'
import { testEvents } from '../support/events.js'

let redis: Redis
beforeAll(() => {
  redis = new Redis(redisUrl())
})
afterAll(async () => {
  await redis.quit()
})

async function exercise(backend: StreamBackend, topic: string): Promise<unknown[]> {
  const write = backend.operatorStateWrite!.bind(backend)
  const read = backend.operatorStateRead!.bind(backend)
  const expireAt = Date.now() + 60_000
  const results: unknown[] = []
  results.push(await write(topic, 'g', 'op', 'w1', { set: [['k\u00000\u000010', 'e:3:c1']], max: [['wm', 25]], expireAt }))
  results.push(await write(topic, 'g', 'op', 'w1', { set: [['k\u00000\u000010', 's:c1'], ['other', 'x']], max: [['wm', 20]], expireAt: expireAt - 30_000 }))
  results.push(await read(topic, 'g', 'op', 'w1', ['k\u00000\u000010', 'wm', 'missing']))
  results.push(await write(topic, 'g', 'op', 'w1', { set: [], max: [['wm', 40]], delete: ['other'], expireAt }))
  results.push(await read(topic, 'g', 'op', 'w1', ['wm', 'other']))
  return results
}

describe('operator state verbs', () => {
  it('set, raise, delete and return previous values alike on Redis and in memory; Redis keys carry the topic tag and expire', async () => {
    const events = testEvents()
    const topic = randomName('opstate')
    const onRedis = await exercise(events.backend, topic)
    const inMemory = await exercise(new MemoryBackend(), topic)
    expect(onRedis).toEqual([[null], ['e:3:c1', null], ['s:c1', '25', null], [], ['40', null]])
    expect(inMemory).toEqual(onRedis)
    const key = `event:opstate:{${topic}}:g:op:w1`
    const ttl = await redis.pttl(key)
    expect(ttl).toBeGreaterThan(50_000) // the later expiry was kept, not shortened by the second write
    expect(ttl).toBeLessThanOrEqual(60_000)
  })
})
