/**
 * Closing a Redis-backed manager leaves nothing behind that fails later: the
 * connection layer's fail-fast timer flushes ioredis' queue after a
 * disconnect, and that flush must not turn into an unhandled rejection.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { newEvent } from '../../src/index.js'
import { CONNECT_FAIL_FAST_MS } from '../../src/backend/redis/connection.js'
import { randomName, redisUrl } from '../support/redis.js'
import { freePort } from '../support/redis-server.js'
import { testEvents } from '../support/events.js'

describe('closing a Redis-backed manager', () => {
  const unhandled: unknown[] = []
  const record = (reason: unknown): void => {
    unhandled.push(reason)
  }
  beforeEach(() => {
    unhandled.length = 0
    process.on('unhandledRejection', record)
  })
  afterEach(() => {
    process.off('unhandledRejection', record)
  })

  it('leaves no unhandled rejection once the fail-fast grace has passed', async () => {
    const events = testEvents({ redisUrl: redisUrl() })
    const topic = randomName('quiet')
    await events.publish(topic, newEvent('x', { n: 1 }))
    const sub = events.subscribe(topic, randomName('g'), () => undefined)
    await sub.unsubscribe()
    await events.close()
    await new Promise((resolve) => setTimeout(resolve, CONNECT_FAIL_FAST_MS + 1_000))
    expect(unhandled).toEqual([])
  })

  it('leaves no unhandled rejection when Redis cannot be reached and the queue is flushed', async () => {
    const events = testEvents({ redisUrl: `redis://127.0.0.1:${String(await freePort())}` })
    await expect(events.publish(randomName('down'), newEvent('x', {}))).rejects.toThrow()
    await new Promise((resolve) => setTimeout(resolve, CONNECT_FAIL_FAST_MS + 1_000))
    await events.close()
    await new Promise((resolve) => setTimeout(resolve, CONNECT_FAIL_FAST_MS + 1_000))
    expect(unhandled).toEqual([])
  })
})
