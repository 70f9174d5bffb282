/**
 * Nothing reachable from an event manager prints the password or the TLS key,
 * and the connection layer works around ioredis' autopipelined callBuffer.
 */
import { inspect } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createRedisClient } from '../../src/backend/redis/connection.js'
import { loadConfig } from '../../src/config/index.js'
import { newEvent } from '../../src/index.js'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { testEvents } from '../support/events.js'

describe('secrets in inspected objects', () => {
  const password = `Pw${randomName('secret').replace(/-/g, '')}`
  let server: RedisServer
  beforeAll(async () => {
    server = await startRedisServer({ password })
  })
  afterAll(async () => {
    await server.stop()
  })

  it('util.inspect(manager, { showHidden: true, depth: 10 }) and of its client, options and connection state never print the password', async () => {
    const events = testEvents({ redisUrl: server.url })
    const topic = randomName('insp')
    await events.publish(topic, newEvent('e', {}))
    const sub = events.subscribe(topic, randomName('g'), () => undefined)
    expect((await events.health()).ok).toBe(true)
    const backend = events.backend as unknown as { client: Record<string, unknown>; control: Record<string, unknown> }
    const client = backend.client
    const reachable = [
      events,
      events.backend,
      client,
      backend.control,
      client['options'],
      client['connector'],
      (client['connector'] as Record<string, unknown> | undefined)?.['options'],
      client['condition'],
      events.config,
    ]
    for (const target of reachable) {
      const text = inspect(target, { showHidden: true, depth: 10 })
      expect(text).not.toContain(password)
    }
    expect(inspect(client, { showHidden: true, depth: 10 })).toContain('***')
    await sub.unsubscribe()
  })
})

describe('callBuffer on the autopipelined client', () => {
  it('keeps its command name (ioredis 6 drops it on autopipelined clients)', async () => {
    const server = await startRedisServer()
    const client = createRedisClient(loadConfig({ redisUrl: server.url }, {}))
    try {
      const reply = await client.callBuffer('ECHO', 'hello')
      expect(Buffer.isBuffer(reply)).toBe(true)
      expect(String(reply)).toBe('hello')
    } finally {
      client.disconnect()
      await server.stop()
    }
  })
})
