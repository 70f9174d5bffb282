/**
 * Shared settlement on Redis (issue 12, item 3): holders are counted per stream
 * entry, so two windowing branches of one subscription, one of them with a
 * view per message (`withPayload`, as `decode()` makes), keep an entry pending
 * until both have settled it.
 */
import { map, share, type Subscription as RxSubscription } from 'rxjs'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { newEvent, type Message } from '../../src/index.js'
import { windowTumbling, type Window } from '../../operators/index.js'
import { randomName, redisUrl } from '../support/redis.js'
import { sleep, testEvents, waitFor } from '../support/events.js'

const BASE = 1_700_000_040_000

let redis: Redis
beforeAll(() => {
  redis = new Redis(redisUrl())
})
afterAll(async () => {
  await redis.quit()
})
const subscriptions: RxSubscription[] = []
afterEach(() => {
  for (const subscription of subscriptions.splice(0)) subscription.unsubscribe()
})

async function pendingCount(topic: string, group: string): Promise<number> {
  const [count] = (await redis.xpending(`event:stream:{${topic}}`, group)) as [number | string, ...unknown[]]
  return Number(count)
}

describe('two windowing branches on one subscription', () => {
  it('keep the XPENDING count at the held entries until both branches settled them', async () => {
    const events = testEvents()
    const topic = randomName('branches')
    const group = randomName('g')
    await events.publishBatch(
      topic,
      [100, 200, 300, 1_500].map((dt, i) => newEvent(`e${i}`, { i }, { timestamp: BASE + dt })),
    )
    const messages = events.topic(topic).consume({ group, consumerTimeout: 30_000, drainTimeout: 50 }).pipe(share())
    const first: Window<Message>[] = []
    const second: Window<Message>[] = []
    // A view per message on the first branch (as decode() per branch makes); the second branch keeps its window open longer.
    subscriptions.push(
      messages.pipe(map((m) => m.withPayload(m.event.payload)), windowTumbling(1_000)).subscribe((w) => first.push(w)),
      messages.pipe(windowTumbling(1_000, { grace: 2_000 })).subscribe((w) => second.push(w)),
    )
    await waitFor(() => first.length === 1, 5_000, "the first branch's window")
    expect(first[0]!.messages).toHaveLength(3)
    expect(await pendingCount(topic, group)).toBe(4)
    expect(await first[0]!.ack()).toBe('acked')
    await sleep(200) // acks are batched: give a wrong ack time to land
    expect(await pendingCount(topic, group)).toBe(4) // the second branch still holds the three entries
    expect(second).toHaveLength(0)

    await events.publish(topic, newEvent('late', {}, { timestamp: BASE + 3_500 }))
    await waitFor(() => second.length === 1, 5_000, "the second branch's window")
    expect(await second[0]!.ack()).toBe('acked')
    await waitFor(async () => (await pendingCount(topic, group)) === 2, 5_000, 'the three entries to be acked')
  })
})
