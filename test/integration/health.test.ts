import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { newEvent } from '../../src/index.js'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

describe('health() against a Redis that goes away', () => {
  let server: RedisServer
  beforeAll(async () => {
    server = await startRedisServer()
  })
  afterAll(async () => {
    await server.stop()
  })

  it('turns ok:false within its timeout when Redis is frozen or killed, and ok:true again once it is back', async () => {
    const events = testEvents({ redisUrl: server.url, healthTimeout: 300 })
    const topic = randomName('h')
    await events.publish(topic, newEvent('x', 1))
    expect((await events.health()).ok).toBe(true)

    // Frozen (SIGSTOP): the connection stays open and PING never answers. The check must not hang.
    server.pause()
    try {
      const started = Date.now()
      const frozen = await events.health()
      const took = Date.now() - started
      expect(took).toBeGreaterThanOrEqual(250)
      expect(took).toBeLessThan(1_500)
      expect(frozen.ok).toBe(false)
      expect(frozen.redis).toMatchObject({ reachable: false, latencyMs: null })
      expect(frozen.reasons.join('\n')).toMatch(/Redis is unreachable: no answer to PING within 300 ms/)
      await expect(events.assertHealthy()).rejects.toMatchObject({ code: 'UNHEALTHY' })
    } finally {
      server.resume()
    }
    await waitFor(async () => (await events.health()).ok, 10_000, 'healthy after resume')

    // Killed: connection refused while it is down.
    await server.kill()
    const started = Date.now()
    const down = await events.health({ timeoutMs: 500 })
    expect(Date.now() - started).toBeLessThan(2_000)
    expect(down.ok).toBe(false)
    expect(down.redis.reachable).toBe(false)

    await server.restart()
    await waitFor(async () => (await events.health()).ok, 15_000, 'healthy after restart')
    const back = await events.health()
    expect(back.redis.reachable).toBe(true)
    expect(back.redis.latencyMs).toBeGreaterThanOrEqual(0)
  })
})
