import { describe, expect, it, onTestFinished } from 'vitest'
import { createEventManager, newEvent, type Message } from '../../src/index.js'
import { DrainTimeoutError, waitForDrained } from '../../src/testing.js'
import { waitFor } from '../support/events.js'
import { newRedis, randomName, redisUrl } from '../support/redis.js'
import { defineConformanceSuite } from './suite.js'

defineConformanceSuite('redis', (options) => createEventManager({ redisUrl: redisUrl(), env: {}, ...options }))

describe('redis only', () => {
  it('waitForDrained copes with XINFO GROUPS reporting no lag (entries deleted ahead of the group)', async () => {
    const events = createEventManager({ redisUrl: redisUrl(), env: {} })
    onTestFinished(() => events.close())
    const topic = randomName('conf')
    const group = randomName('g')
    const ids = await events.publishBatch(topic, Array.from({ length: 5 }, (_, n) => newEvent('test.numbered', { n })))
    const seen: Message[] = []
    let acking = false
    const sub = events.topic(topic).consume({ group, maxPendingMessages: 1, blockMs: 200, drainTimeout: 10 }).subscribe((m) => {
      seen.push(m)
      if (acking) void m.ack()
    })
    onTestFinished(() => sub.unsubscribe())
    await waitFor(() => seen.length === 1, 5_000, 'the first delivery')

    const redis = newRedis()
    try {
      expect(await redis.xdel(`event:stream:{${topic}}`, ids[2]!)).toBe(1) // a tombstone ahead of the group: Redis cannot count the lag
    } finally {
      await redis.quit()
    }
    expect((await events.backend.groups(topic)).find((g) => g.name === group)?.lag).toBeNull()
    const error = await waitForDrained(events, topic, group, { timeoutMs: 100 }).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(DrainTimeoutError)
    expect((error as DrainTimeoutError).state).toMatchObject({ groupExists: true, pending: 1, lag: null })
    expect((error as Error).message).toContain('lag unknown')

    acking = true
    await seen[0]!.ack()
    await waitForDrained(events, topic, group)
    expect(seen.map((m) => m.streamId)).toEqual(ids.filter((_, i) => i !== 2))
  })
})
