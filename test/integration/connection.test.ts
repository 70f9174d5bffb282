import { inspect } from 'node:util'
import { randomBytes } from 'node:crypto'
import type { Cluster, Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createBlockingClient, createRedisClient, sanitizeRedisError, type RedisClient } from '../../src/backend/redis/connection.js'
import { redisKeys } from '../../src/backend/redis/keys.js'
import { loadConfig, type Config } from '../../src/config/index.js'
import { BackendError, ConfigError, ConnectionError } from '../../src/errors.js'
import { newRedis, randomName, redisUrl } from '../support/redis.js'
import { startRedisCluster, startRedisServer, type RedisCluster, type RedisServer } from '../support/redis-server.js'

/** Loads a configuration from options only (never the process environment). */
const configFor = (options: Parameters<typeof loadConfig>[0], env: NodeJS.ProcessEnv = {}): Config => loadConfig(options, env)

/** Everything an error exposes, own properties and cause included. */
function everythingIn(error: Error): string {
  const parts = [error.message, error.stack ?? '', JSON.stringify(error, Object.getOwnPropertyNames(error)), inspect(error, { depth: 10 })]
  for (let cause: unknown = error.cause; cause !== undefined; cause = (cause as { cause?: unknown }).cause) {
    if (cause instanceof Error) parts.push(String(cause), JSON.stringify(cause, Object.getOwnPropertyNames(cause)), cause.stack ?? '')
    else parts.push(inspect(cause))
  }
  return parts.join('\n')
}

async function close(...clients: RedisClient[]): Promise<void> {
  await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())))
}

describe('createRedisClient', () => {
  it('connects to the harness Redis and answers PING', async () => {
    const client = createRedisClient(configFor({ redisUrl: redisUrl() }), { name: randomName('conn') })
    try {
      expect(await client.ping()).toBe('PONG')
    } finally {
      await close(client)
    }
  })

  it('names the connection and selects the configured database', async () => {
    const name = randomName('named')
    const client = createRedisClient(configFor({ redisUrl: redisUrl(), redisDb: 3 }), { name }) as Redis
    try {
      expect(await client.client('GETNAME')).toBe(name)
      const key = randomName('db-key')
      await client.set(key, 'in-db-3', 'EX', 60)
      const raw = newRedis()
      try {
        await raw.select(3)
        expect(await raw.get(key)).toBe('in-db-3')
        await raw.del(key)
      } finally {
        await raw.quit()
      }
    } finally {
      await close(client)
    }
  })

  it('connects lazily only when asked', async () => {
    const client = createRedisClient(configFor({ redisUrl: redisUrl() }), { lazyConnect: true })
    try {
      expect(client.status).toBe('wait')
      expect(await client.ping()).toBe('PONG')
    } finally {
      await close(client)
    }
  })

  it('createBlockingClient opens a connection of its own', async () => {
    const config = configFor({ redisUrl: redisUrl() })
    const client = createRedisClient(config) as Redis
    const blocking = createBlockingClient(config) as Redis
    try {
      const [mainId, blockingId] = await Promise.all([client.client('ID'), blocking.client('ID')])
      expect(mainId).not.toBe(blockingId)
      // A blocking read on its own connection does not delay the main client.
      const key = redisKeys(`${randomName('p')}:`).stream(randomName('topic'))
      const read = blocking.xread('BLOCK', 5_000, 'STREAMS', key, '0')
      const started = Date.now()
      expect(await client.ping()).toBe('PONG')
      expect(Date.now() - started).toBeLessThan(1_000)
      await client.xadd(key, '*', 'f', 'v')
      const reply = await read
      expect(reply?.[0]?.[0]).toBe(key)
      await client.del(key)
    } finally {
      await close(client, blocking)
    }
  })

  it('refuses memory:// with a ConfigError', () => {
    expect(() => createRedisClient(configFor({ redisUrl: 'memory://' }))).toThrow(ConfigError)
  })
})

describe('authentication', () => {
  let server: RedisServer
  const adminPassword = `admin-${randomBytes(8).toString('hex')}`
  const appPassword = `app-${randomBytes(8).toString('hex')}`
  const appUser = randomName('appuser')

  beforeAll(async () => {
    server = await startRedisServer({ password: adminPassword })
    const admin = newRedis(server.url)
    try {
      await admin.call('ACL', 'SETUSER', appUser, 'on', `>${appPassword}`, '~*', '&*', '+@all')
    } finally {
      await admin.quit()
    }
  })

  afterAll(async () => {
    await server.stop()
  })

  it('connects as an ACL user from a URL', async () => {
    const config = configFor({ redisUrl: `redis://${appUser}:${encodeURIComponent(appPassword)}@${server.host}:${server.port}` })
    const client = createRedisClient(config)
    try {
      expect(await client.call('ACL', 'WHOAMI')).toBe(appUser)
    } finally {
      await close(client)
    }
  })

  it('connects as an ACL user from EVENT_REDIS_HOSTS, _USERNAME and _PASSWORD', async () => {
    const config = configFor({}, {
      EVENT_REDIS_HOSTS: `${server.host}:${server.port}`,
      EVENT_REDIS_USERNAME: appUser,
      EVENT_REDIS_PASSWORD: appPassword,
    })
    const client = createRedisClient(config)
    try {
      expect(await client.call('ACL', 'WHOAMI')).toBe(appUser)
    } finally {
      await close(client)
    }
  })

  it('connects with requirepass (default user, password only)', async () => {
    const client = createRedisClient(configFor({ redisUrl: server.url }))
    try {
      expect(await client.call('ACL', 'WHOAMI')).toBe('default')
    } finally {
      await close(client)
    }
  })

  it.each([
    ['an ACL user', (wrong: string) => `redis://${appUser}:${encodeURIComponent(wrong)}@`],
    ['the default user', (wrong: string) => `redis://:${encodeURIComponent(wrong)}@`],
  ])('a wrong password for %s fails with a clear error that never holds the password', async (_who, prefix) => {
    const wrongPassword = `wrong-${randomBytes(8).toString('hex')}`
    const config = configFor({ redisUrl: `${prefix(wrongPassword)}${server.host}:${server.port}` })
    const emitted: BackendError[] = []
    const client = createRedisClient(config, { onError: (e) => emitted.push(e) })
    let raw: unknown
    try {
      await client.ping()
      expect.unreachable('PING with a wrong password must fail')
    } catch (error) {
      raw = error
    } finally {
      client.disconnect()
    }
    // ioredis keeps the AUTH/HELLO arguments on its error: the client rejects with a sanitized
    // ConnectionError instead (sanitizing it again changes nothing).
    expect(raw).toBeInstanceOf(ConnectionError)
    expect(JSON.stringify((raw as { command?: unknown }).command ?? null)).not.toContain(wrongPassword)

    const error = sanitizeRedisError(raw, config)
    expect(error).toBe(raw)
    expect(error).toBeInstanceOf(BackendError)
    expect(error.code).toBe('CONNECTION_FAILED')
    expect(error.message).toMatch(/WRONGPASS|NOAUTH/)
    expect(error.message).toMatch(/authentication failed/)
    expect(Object.getOwnPropertyNames(error)).not.toContain('command')
    expect((error.cause as Record<string, unknown>)['args']).toBeUndefined()
    for (const e of [error, ...emitted]) {
      const text = everythingIn(e)
      expect(text).not.toContain(wrongPassword)
      expect(text).not.toContain(appPassword)
      expect(text).not.toContain(adminPassword)
    }
    expect(emitted.length).toBeGreaterThan(0)
    expect(sanitizeRedisError(error, config)).toBe(error)
  })

  it('redacts the password from any error message, plain or URL-encoded', () => {
    const password = 'p@ss/word:1'
    const config = configFor({ redisUrl: `redis://u:${encodeURIComponent(password)}@h:1` })
    const original = Object.assign(new Error(`ERR bad ${password} and ${encodeURIComponent(password)}`), {
      command: { name: 'auth', args: ['u', password] },
      code: 'ERR',
    })
    const error = sanitizeRedisError(original, config)
    expect(error.message).toBe('Redis AUTH failed: ERR bad *** and ***')
    expect(everythingIn(error)).not.toContain(password)
    expect((error.cause as Record<string, unknown>)['code']).toBe('ERR')
    expect((error.cause as Record<string, unknown>)['command']).toBe('AUTH')
    expect(sanitizeRedisError('plain failure', config).message).toBe('Redis failed: plain failure')
  })
})

describe('Redis Cluster', () => {
  let cluster: RedisCluster

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 })
  }, 30_000)

  afterAll(async () => {
    await cluster.stop()
  })

  it('connects from two seed hosts (mode cluster) and writes all keys of one topic in a MULTI', async () => {
    const [first, second] = cluster.nodes
    const config = configFor({}, { EVENT_REDIS_HOSTS: `${first!.host}:${first!.port},${second!.host}:${second!.port}` })
    expect(config.redis.mode).toBe('cluster')
    const client = createRedisClient(config) as Cluster
    try {
      const keys = redisKeys(`${randomName('prefix')}:`)
      const topic = randomName('orders.eu')
      const results = await client
        .multi()
        .xadd(keys.stream(topic), '*', 'id', 'e1', 'payload', '{}')
        .xadd(keys.dlq(topic), '*', 'dlq_original_id', '1-0')
        .zadd(keys.delayed(topic), Date.now() + 60_000, 'e2')
        .hset(keys.delayedData(topic), 'e2', '["id","e2"]')
        .exec()
      expect(results).not.toBeNull()
      for (const [error] of results ?? []) expect(error).toBeNull()
      await client.sadd(keys.topics(), topic)

      expect(await client.xlen(keys.stream(topic))).toBe(1)
      expect(await client.zcard(keys.delayed(topic))).toBe(1)
      expect(await client.hget(keys.delayedData(topic), 'e2')).toBe('["id","e2"]')
      expect(await client.sismember(keys.topics(), topic)).toBe(1)
    } finally {
      await close(client)
    }
  })

  it('puts every key of a topic in one slot (CLUSTER KEYSLOT)', async () => {
    const node = newRedis(`redis://${cluster.nodes[0]!.host}:${cluster.nodes[0]!.port}`)
    try {
      const keys = redisKeys('event:')
      const topics = [randomName('t'), 'user-events', 'a', 'orders:eu.v2', 'x'.repeat(200)]
      const slotsOfTopic: number[] = []
      for (const topic of topics) {
        const slots = await Promise.all(
          [keys.stream(topic), keys.dlq(topic), keys.delayed(topic), keys.delayedData(topic)].map(
            (key) => node.call('CLUSTER', 'KEYSLOT', key) as Promise<number>,
          ),
        )
        expect(new Set(slots).size).toBe(1)
        expect(slots[0]).toBe(await node.call('CLUSTER', 'KEYSLOT', topic))
        slotsOfTopic.push(slots[0]!)
      }
      expect(new Set(slotsOfTopic).size).toBeGreaterThan(1) // topics spread over the cluster
    } finally {
      await node.quit()
    }
  })

  it('createBlockingClient gives a Cluster of its own for blocking reads', async () => {
    const [first, second] = cluster.nodes
    const config = configFor({ redisHosts: [`${first!.host}:${first!.port}`, `${second!.host}:${second!.port}`] })
    const client = createRedisClient(config) as Cluster
    const blocking = createBlockingClient(config) as Cluster
    try {
      expect(blocking).not.toBe(client)
      const key = redisKeys('event:').stream(randomName('blocking'))
      const read = blocking.xread('BLOCK', 5_000, 'STREAMS', key, '0')
      await client.xadd(key, '*', 'f', 'v')
      const reply = await read
      expect(reply?.[0]?.[0]).toBe(key)
    } finally {
      await close(client, blocking)
    }
  })
})
