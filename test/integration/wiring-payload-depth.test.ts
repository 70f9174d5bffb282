/**
 * A configured payload depth limit (`EVENT_MAX_PAYLOAD_DEPTH`, option
 * `maxPayloadDepth`) applies on read (issue 15, item 8): an entry written raw
 * by something else, nested deeper than the limit, goes to the DLQ as
 * `payload_too_deep`; one within the limit is handled.
 */
import { map } from 'rxjs'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { randomName, redisUrl } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

let redis: Redis
beforeAll(() => {
  redis = new Redis(redisUrl())
})
afterAll(async () => {
  await redis.quit()
})

const nested = (depth: number): string => '{"a":'.repeat(depth - 1) + '{"a":1}' + '}'.repeat(depth - 1)

describe('the payload depth limit on read', () => {
  it('a manager with maxPayloadDepth 3 dead-letters a raw entry 5 deep as payload_too_deep and handles one 3 deep', async () => {
    const events = testEvents({ maxPayloadDepth: 3 })
    const topic = randomName('wiring-depth')
    const key = `event:stream:{${topic}}`
    await redis.xadd(key, '*', 'id', 'ok-1', 'name', 'shallow', 'ts', String(Date.now()), 'headers', '{}', 'payload', nested(3))
    const deepId = await redis.xadd(key, '*', 'id', 'deep-1', 'name', 'deep', 'ts', String(Date.now()), 'headers', '{}', 'payload', nested(5))
    const handled: unknown[] = []
    let failure: unknown
    events
      .topic(topic)
      .consume({ group: randomName('g'), drainTimeout: 50 })
      .pipe(map((m) => ({ m, payload: m.event.payload })))
      .subscribe({
        next: ({ m, payload }) => {
          handled.push(payload)
          void m.ack()
        },
        error: (e: unknown) => (failure = e),
      })
    await waitFor(() => failure !== undefined, 10_000, 'the pipeline to fail on the deep payload')
    expect((failure as Error).name).toBe('MalformedPayloadError')
    expect(handled).toEqual([JSON.parse(nested(3))])
    await waitFor(async () => (await events.deadLetters.count(topic)) === 1, 10_000, 'the dead letter')
    const [letter] = await events.deadLetters.list(topic, { count: 1 })
    expect(letter?.originalId).toBe(deepId)
    expect(letter?.error).toMatch(/^payload_too_deep\b/)
  })
})
