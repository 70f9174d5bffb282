/**
 * Every call settles within the command timeout of the call, even queued
 * behind a stuck pipeline on a blackholed connection; health() PINGs on a
 * connection that carries no writes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Redis } from 'ioredis'
import { CommandTimeoutError, newEvent } from '../../src/index.js'
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { testEvents } from '../support/events.js'

describe('calls bounded from the call', () => {
  let server: RedisServer
  let proxy: FaultProxy
  beforeAll(async () => {
    server = await startRedisServer()
    proxy = await startFaultProxy({ host: server.host, port: server.port })
  })
  afterAll(async () => {
    await proxy.close()
    await server.stop()
  })

  it('during a blackhole, every publish (queued behind stuck ones too) settles with a CommandTimeoutError near the timeout', async () => {
    const timeoutMs = 500
    const events = testEvents({ redisUrl: proxy.url, commandTimeout: timeoutMs })
    const topic = randomName('bh')
    await events.publish(topic, newEvent('warm', {}))
    proxy.blackhole(true)
    const durations: number[] = []
    const errors: unknown[] = []
    try {
      const calls: Promise<void>[] = []
      // Publishes issued over 3 timeouts: later ones queue behind a pipeline that never answers.
      for (let i = 0; i < 30; i++) {
        const started = performance.now()
        calls.push(
          events.publish(topic, newEvent('e', { i })).then(
            () => void durations.push(performance.now() - started),
            (error: unknown) => {
              durations.push(performance.now() - started)
              errors.push(error)
            },
          ),
        )
        await new Promise((r) => setTimeout(r, 50))
      }
      await Promise.all(calls)
    } finally {
      proxy.blackhole(false)
    }
    expect(errors).toHaveLength(30)
    for (const error of errors) {
      // A publish wraps it as its own error class ("outcome unknown"); the cause is the timeout.
      const timeout = error instanceof CommandTimeoutError ? error : (error as { cause?: unknown }).cause
      expect(timeout).toBeInstanceOf(CommandTimeoutError)
    }
    // Generous: the bound is the timeout; the old behaviour was a multiple of it.
    expect(Math.max(...durations)).toBeLessThan(timeoutMs * 1.9)
  })

  it('health() PINGs on its own connection: a CLIENT PAUSE WRITE does not make Redis "unreachable"', async () => {
    const events = testEvents({ redisUrl: server.url, healthTimeout: 1_000, commandTimeout: 10_000 })
    const topic = randomName('pause')
    await events.publish(topic, newEvent('warm', {}))
    const admin = new Redis(server.port, server.host)
    try {
      await admin.call('CLIENT', 'PAUSE', '3000', 'WRITE')
      // A write now waits behind the pause on the shared connection...
      const paused = events.publish(topic, newEvent('during-pause', {}))
      await new Promise((r) => setTimeout(r, 100))
      const report = await events.health()
      expect(report.redis.reachable).toBe(true)
      expect(report.ok).toBe(true)
      await admin.call('CLIENT', 'UNPAUSE')
      await paused
    } finally {
      await admin.call('CLIENT', 'UNPAUSE').catch(() => undefined)
      admin.disconnect()
    }
  })
})
