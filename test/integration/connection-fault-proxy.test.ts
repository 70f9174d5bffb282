/**
 * The fault-injecting proxy of test/support behaves as the fault tests assume.
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js'
import { newRedis, randomName, redisUrl } from '../support/redis.js'

let proxy: FaultProxy
const direct = (): Redis => newRedis()

beforeAll(async () => {
  const url = new URL(redisUrl())
  proxy = await startFaultProxy({ host: url.hostname, port: Number(url.port) })
})
afterAll(async () => {
  await proxy.close()
})

function client(): Redis {
  // No re-send of unanswered commands after a reconnect: the tests count executions.
  // (ioredis then neither re-sends nor rejects them: the command timeout does.)
  const c = new Redis(proxy.url, { maxRetriesPerRequest: 1, retryStrategy: () => 50, autoResendUnfulfilledCommands: false, commandTimeout: 2_000 })
  c.on('error', () => undefined) // resets are the point of these tests
  return c
}

describe('fault proxy', () => {
  it('forwards commands and replies', async () => {
    const c = client()
    try {
      expect(await c.ping()).toBe('PONG')
    } finally {
      c.disconnect()
    }
  })

  it('holds traffic while blackholed and delivers it afterwards', async () => {
    const c = client()
    const key = randomName('proxy')
    try {
      await c.ping()
      proxy.blackhole(true)
      let settled = false
      const pending = c.set(key, 'v').finally(() => (settled = true))
      await new Promise((r) => setTimeout(r, 300))
      expect(settled).toBe(false)
      const raw = direct()
      expect(await raw.get(key)).toBeNull() // nothing reached the server
      proxy.blackhole(false)
      expect(await pending).toBe('OK')
      expect(await raw.get(key)).toBe('v')
      await raw.quit()
    } finally {
      proxy.blackhole(false)
      c.disconnect()
    }
  })

  it('dropNextReplies: the command runs, its reply is lost, the connection is reset', async () => {
    const c = client()
    const key = randomName('proxy')
    try {
      await c.ping()
      proxy.dropNextReplies(1)
      await expect(c.incr(key)).rejects.toThrow()
      const raw = direct()
      expect(await raw.get(key)).toBe('1')
      await raw.quit()
      // the client reconnects and works again
      expect(await c.get(key)).toBe('1')
    } finally {
      c.disconnect()
    }
  })

  it('resetAll closes every connection; clients reconnect', async () => {
    const c = client()
    try {
      await c.ping()
      const before = proxy.connections
      const closed = new Promise<void>((r) => c.once('close', () => r()))
      proxy.resetAll()
      await closed
      expect(await c.ping()).toBe('PONG')
      expect(proxy.connections).toBeGreaterThan(before)
    } finally {
      c.disconnect()
    }
  })
})
