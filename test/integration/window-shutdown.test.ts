/**
 * Shutdown with open windows and join buffers on Redis (issue 12, item 10):
 * close() completes the consume() Observables; the window and join operators
 * give back what they hold at once, emit nothing, and complete; the entries
 * stay pending for a replay.
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { newEvent, type Message } from '../../src/index.js'
import { joinWithin, windowTumbling } from '../../operators/index.js'
import { randomName, redisUrl } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

const BASE = 1_700_000_040_000

let redis: Redis
beforeAll(() => {
  redis = new Redis(redisUrl())
})
afterAll(async () => {
  await redis.quit()
})

async function pendingCount(topic: string, group: string): Promise<number> {
  const reply = (await redis.xpending(`event:stream:{${topic}}`, group).catch(() => [0])) as [number | string, ...unknown[]]
  return Number(reply[0])
}

describe('close() with open windows and join buffers', () => {
  it('completes the window and join without emitting, gives their messages back at once, and leaves them pending', async () => {
    const events = testEvents()
    const topic = randomName('shutdown')
    const other = randomName('shutdown-other')
    const group = randomName('g')
    await events.publishBatch(topic, [1, 2, 3].map((i) => newEvent(`e${i}`, { id: 'k' }, { timestamp: BASE + i })))
    const emitted: unknown[] = []
    const done = { window: false, join: false }
    // a long drain timeout: close() must not wait for it (held messages are given back, not drained)
    const consume = (name: string) => events.topic(name).consume({ group, consumerTimeout: 60_000, drainTimeout: 20_000 })
    consume(topic)
      .pipe(windowTumbling(60_000, { idleTimeout: 30_000 }))
      .subscribe({ next: (w) => emitted.push(w), complete: () => (done.window = true) })
    consume(topic).pipe(
      joinWithin(consume(other), { leftKey: (m: Message) => m.streamId, rightKey: (m: Message) => m.streamId, within: 60_000, type: 'outer', idleTimeout: 30_000 }),
    ).subscribe({ next: (p) => emitted.push(p), complete: () => (done.join = true) })
    await waitFor(async () => (await pendingCount(topic, group)) === 3, 5_000, 'the three messages to be held')
    const started = Date.now()
    await events.close()
    const closeMs = Date.now() - started
    expect(done).toEqual({ window: true, join: true })
    expect(emitted).toEqual([])
    expect(await pendingCount(topic, group)).toBe(3) // given back, not settled: replayed on restart
    expect(closeMs).toBeLessThan(15_000) // not the 20 s drain timeout (measured: see the report)
    console.log(`close() with open windows took ${closeMs} ms`)
  })
})
