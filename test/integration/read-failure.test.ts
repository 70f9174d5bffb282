import { describe, expect, it } from 'vitest'
import { createBlockingClient, createRedisClient } from '../../src/backend/redis/connection.js'
import { RedisBackend } from '../../src/backend/redis/redis-backend.js'
import type { GroupReader, StreamBackend } from '../../src/backend/types.js'
import { BackendError, loadConfig, newEvent, type Message } from '../../src/index.js'
import { newRedis, randomName, redisUrl } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

/** The real Redis adapter, with readers that fail their next read when told to (a dropped connection mid-read). */
function faultyBackend(): { backend: StreamBackend; failNextRead: () => void } {
  const config = loadConfig({ redisUrl: redisUrl() }, {})
  const real = new RedisBackend({
    client: createRedisClient(config),
    createBlockingClient: () => createBlockingClient(config),
    keyPrefix: config.keyPrefix,
    ownsClient: true,
  })
  let fail = false
  const backend = new Proxy(real, {
    get(target, property, receiver) {
      if (property !== 'createReader') {
        const value: unknown = Reflect.get(target, property, receiver)
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value
      }
      return (): GroupReader => {
        const reader = target.createReader()
        return {
          read: (...args: Parameters<GroupReader['read']>) => {
            if (fail && args[3].from === 'new') {
              fail = false
              return Promise.reject(new BackendError('connection lost (injected)'))
            }
            return reader.read(...args)
          },
          close: () => reader.close(),
        }
      }
    },
  })
  return { backend, failNextRead: () => (fail = true) }
}

describe('a failed read', () => {
  it('does not raise the delivery counts of the messages still being handled, and consumption resumes', async () => {
    const { backend, failNextRead } = faultyBackend()
    const redis = newRedis()
    try {
      const events = testEvents({ backend })
      const topic = randomName('t')
      const group = randomName('g')
      await events.publishBatch(topic, Array.from({ length: 5 }, (_, i) => newEvent('held', i)))
      const seen: Message[] = []
      const sub = events.topic(topic).consume({ group, consumer: 'c1', blockMs: 100, consumerTimeout: 60_000 }).subscribe((m) => seen.push(m))
      await waitFor(() => seen.length === 5)
      failNextRead()
      await new Promise((r) => setTimeout(r, 300))
      await events.publish(topic, newEvent('after', 5))
      await waitFor(() => seen.some((m) => m.event.name === 'after'), 10_000, 'consumption to resume')
      const pending = (await redis.xpending(`event:stream:{${topic}}`, group, '-', '+', 100)) as [string, string, number, number][]
      const held = new Set(seen.filter((m) => m.event.name === 'held').map((m) => m.streamId))
      const counts = pending.filter(([id]) => held.has(id)).map(([, , , count]) => count)
      expect(counts).toEqual([1, 1, 1, 1, 1])
      expect(seen.filter((m) => m.event.name === 'held')).toHaveLength(5) // and none delivered twice
      for (const m of seen) await m.ack()
      sub.unsubscribe()
    } finally {
      await redis.quit()
    }
  })
})
