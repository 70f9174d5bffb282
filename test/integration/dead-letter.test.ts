/**
 * The dead letter queue manager: every verb, targeted replay, TTL trimming
 * (on every move and periodically), and a failing move that must not crash.
 */
import { describe, expect, it } from 'vitest'
import type { Subscription as RxSubscription } from 'rxjs'
import { createBlockingClient, createRedisClient } from '../../src/backend/redis/connection.js'
import { RedisBackend } from '../../src/backend/redis/redis-backend.js'
import { DeadLetterQueue, encodeEvent, loadConfig, newEvent, type EventManager, type Message } from '../../src/index.js'
import { sleep, testEvents, waitFor } from '../support/events.js'
import { newRedis, randomName, redisUrl } from '../support/redis.js'

const streamKey = (topic: string): string => `event:stream:{${topic}}`
const dlqKey = (topic: string): string => `event:dlq:{${topic}}`

async function pending(topic: string, group: string): Promise<number> {
  const redis = newRedis()
  try {
    const [count] = (await redis.xpending(streamKey(topic), group)) as [number]
    return count
  } finally {
    await redis.quit()
  }
}

/** Consumes `group`: events named `bad` are dead-lettered with `reason`, the others handled. */
function failing(events: EventManager, topic: string, group: string, handled: string[], reason = 'boom'): RxSubscription {
  return events
    .topic(topic)
    .consume({ group })
    .subscribe((m: Message) => {
      handled.push(`${m.event.name}:${String(m.event.payload)}`)
      void (m.event.name === 'bad' ? m.deadLetter(new Error(reason)) : m.ack())
    })
}

describe('DeadLetterQueue', () => {
  it('list pages with count and after; get, count, remove and purge', async () => {
    const events = testEvents({ maxRetries: 0 })
    const topic = randomName('dlq')
    const group = randomName('g')
    const handled: string[] = []
    const sub = failing(events, topic, group, handled, `x${'y'.repeat(5_000)}`)
    const published = await events.publishBatch(topic, Array.from({ length: 5 }, (_, i) => newEvent('bad', i)))
    const dlq = events.deadLetters
    await waitFor(async () => (await dlq.count(topic)) === 5, 5_000, 'five dead letters')
    sub.unsubscribe()

    const all = await dlq.list(topic)
    expect(all.map((l) => l.originalId)).toEqual(published)
    const page1 = await dlq.list(topic, { count: 2 })
    const page2 = await dlq.list(topic, { count: 2, after: page1[1]!.dlqId })
    const page3 = await dlq.list(topic, { count: 2, after: page2[1]!.dlqId })
    expect([...page1, ...page2, ...page3].map((l) => l.dlqId)).toEqual(all.map((l) => l.dlqId))
    expect(page3).toHaveLength(1)

    const letter = await dlq.get(topic, all[0]!.dlqId)
    expect(letter).toMatchObject({ dlqId: all[0]!.dlqId, topic, originalId: published[0], group, attempts: 1 })
    expect(letter?.event).toMatchObject({ name: 'bad', payload: 0 })
    expect(letter?.error.length).toBeLessThanOrEqual(1_000) // capped
    expect(letter?.error.startsWith('xyyy')).toBe(true)
    expect(letter?.failedAt).toBeGreaterThan(Date.now() - 60_000)
    expect(letter?.fields['dlq_group']).toBe(group)
    expect(await dlq.get(topic, '1-1')).toBeNull()

    expect(await dlq.remove(topic, all[0]!.dlqId)).toBe(1)
    expect(await dlq.remove(topic, all[0]!.dlqId)).toBe(0)
    expect(await dlq.count(topic)).toBe(4)
    expect(await dlq.purge(topic)).toBe(4)
    expect(await dlq.count(topic)).toBe(0)
    expect(await dlq.list(topic)).toEqual([])
  })

  it('replay is one atomic move back to the topic, handled only by the group that failed', async () => {
    const events = testEvents()
    const topic = randomName('replay')
    const failed = randomName('failed')
    const other = randomName('other')
    const handledFailed: string[] = []
    const handledOther: string[] = []
    const subs = [failing(events, topic, failed, handledFailed), failing(events, topic, other, [])]
    // The other group handles everything fine.
    subs[1]!.unsubscribe()
    subs[1] = events.topic(topic).consume({ group: other }).subscribe((m) => {
      handledOther.push(`${m.event.name}:${String(m.event.payload)}`)
      void m.ack()
    })
    await events.publishBatch(topic, [newEvent('good', 1), newEvent('bad', 2)])
    await waitFor(async () => (await events.deadLetters.count(topic)) === 1 && handledOther.length === 2, 5_000, 'one dead letter')
    const [letter] = await events.deadLetters.list(topic)
    expect(letter?.group).toBe(failed)

    const streamId = await events.deadLetters.replay(topic, letter!.dlqId)
    expect(streamId).toMatch(/^\d+-\d+$/)
    expect(await events.deadLetters.get(topic, letter!.dlqId)).toBeNull() // gone from the DLQ in the same script
    expect(await events.deadLetters.replay(topic, letter!.dlqId)).toBeNull()
    // The failed group handles it again (and dead-letters it again: it still fails) ...
    await waitFor(() => handledFailed.filter((h) => h === 'bad:2').length === 2, 5_000, 'the failed group handles the replay')
    await waitFor(async () => (await events.deadLetters.count(topic)) === 1, 5_000, 'dead-lettered again')
    // ... the other group acks it without calling its handler.
    await waitFor(async () => (await pending(topic, other)) === 0 && (await pending(topic, failed)) === 0, 5_000, 'nothing pending')
    const redis = newRedis()
    try {
      const groups = (await redis.xinfo('GROUPS', streamKey(topic))) as unknown[][]
      for (const g of groups) expect(g[g.indexOf('last-delivered-id') + 1]).toBe(streamId)
    } finally {
      await redis.quit()
    }
    await sleep(100)
    expect(handledOther).toEqual(['good:1', 'bad:2'])
    const [again] = await events.deadLetters.list(topic)
    expect(again?.originalId).toBe(streamId)
    subs.forEach((s) => s.unsubscribe())
  })

  it('replayAll replays one group’s letters, or those a filter keeps, and ends even when they fail again', async () => {
    const events = testEvents()
    const topic = randomName('replayall')
    const a = randomName('a')
    const b = randomName('b')
    const handled: string[] = []
    const subs = [failing(events, topic, a, handled), failing(events, topic, b, handled)]
    await events.publishBatch(topic, Array.from({ length: 300 }, (_, i) => newEvent('bad', i)))
    await waitFor(async () => (await events.deadLetters.count(topic)) === 600, 10_000, '600 dead letters')

    // Group a's handler keeps failing at once: each replayed letter comes back while replayAll runs.
    const replayedA = await events.deadLetters.replayAll(topic, { group: a })
    expect(replayedA).toBe(300)
    await waitFor(async () => (await events.deadLetters.count(topic)) === 600 && (await pending(topic, a)) === 0, 10_000, 'group a failed again')
    const letters = await events.deadLetters.list(topic, { count: 1_000 })
    expect(letters.filter((l) => l.group === b)).toHaveLength(300) // untouched

    const even = await events.deadLetters.replayAll(topic, { group: b, filter: (l) => (l.event?.payload as number) % 2 === 0 })
    expect(even).toBe(150)
    subs.forEach((s) => s.unsubscribe())
  })

  it('is usable without an event manager', async () => {
    const config = loadConfig({ redisUrl: redisUrl() }, {})
    const backend = new RedisBackend({ client: createRedisClient(config), createBlockingClient: () => createBlockingClient(config), keyPrefix: config.keyPrefix, ownsClient: true })
    const dlq = new DeadLetterQueue(backend, config)
    try {
      const topic = randomName('alone')
      const group = randomName('g')
      const [id] = await backend.append(topic, [encodeEvent(newEvent('x', { a: 1 }), 1_000)])
      await backend.ensureGroup(topic, group, 'beginning')
      const reader = backend.createReader()
      await reader.read(topic, group, 'c', { count: 1, blockMs: 0, from: 'new' })
      await reader.close()
      await backend.deadLetter(topic, group, [{ id: id!, fields: encodeEvent(newEvent('x', { a: 1 }), 1_000), error: 'nope', attempts: 2 }], 0)
      const [letter] = await dlq.list(topic)
      expect(letter).toMatchObject({ originalId: id, group, error: 'nope', attempts: 2, event: { name: 'x', payload: { a: 1 } } })
      expect(await dlq.count(topic)).toBe(1)
      expect(await dlq.purge(topic)).toBe(1)
    } finally {
      await backend.close()
    }
  })
})

describe('dead letter TTL', () => {
  const TTL = 1_500

  it('every move trims letters older than dlqTtl, and only those', async () => {
    const events = testEvents({ dlqTtl: TTL })
    const topic = randomName('ttl')
    const group = randomName('g')
    const sub = failing(events, topic, group, [])
    await events.publishBatch(topic, [newEvent('bad', 'old-1'), newEvent('bad', 'old-2')])
    await waitFor(async () => (await events.deadLetters.count(topic)) === 2, 5_000, 'two old letters')
    sub.unsubscribe()
    await sleep(TTL + 100)
    // No subscription runs now: only the move below can trim.
    const mover = failing(events, topic, group, [])
    await events.publish(topic, newEvent('bad', 'new'))
    await waitFor(async () => (await events.deadLetters.list(topic)).some((l) => l.event?.payload === 'new'), 5_000, 'the new letter')
    expect((await events.deadLetters.list(topic)).map((l) => l.event?.payload)).toEqual(['new'])
    mover.unsubscribe()
  })

  it('a running subscription trims expired letters periodically, and only those; trimExpired does it on demand', async () => {
    const events = testEvents({ dlqTtl: TTL })
    const topic = randomName('ttl')
    const group = randomName('g')
    const backend = events.backend
    const redis = newRedis()
    try {
      // Letters written without trimming (trimBeforeMs 0): two old ones, then a fresh one.
      const letter = async (payload: string): Promise<void> => {
        const fields = encodeEvent(newEvent('bad', payload), 1_000)
        const [id] = await backend.append(topic, [fields])
        await backend.ensureGroup(topic, group, 'beginning')
        await redis.xreadgroup('GROUP', group, 'dead', 'COUNT', 10, 'STREAMS', streamKey(topic), '>')
        await backend.deadLetter(topic, group, [{ id: id!, fields, error: 'x', attempts: 1 }], 0)
      }
      await letter('old-1')
      await letter('old-2')
      await sleep(TTL + 100)
      await letter('fresh')
      expect(await events.deadLetters.count(topic)).toBe(3)
      const sub = events.topic(topic).consume({ group: randomName('idle'), startFrom: 'latest' }).subscribe()
      await waitFor(async () => (await events.deadLetters.count(topic)) < 3, 5_000, 'a periodic trim')
      expect((await events.deadLetters.list(topic)).map((l) => l.event?.payload)).toEqual(['fresh'])
      sub.unsubscribe()
      await sleep(TTL + 100)
      expect(await events.deadLetters.trimExpired(topic)).toBe(1)
      expect(await events.deadLetters.count(topic)).toBe(0)
    } finally {
      await redis.quit()
    }
  })
})

describe('a dead-letter move that fails', () => {
  it('does not crash the process; the entry stays pending and is moved once the DLQ works again', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    const events = testEvents()
    const topic = randomName('dlqfail')
    const group = randomName('g')
    const redis = newRedis()
    try {
      await redis.set(dlqKey(topic), 'not a stream') // every XADD to the DLQ fails (WRONGTYPE)
      await redis.xadd(streamKey(topic), '*', 'payload', '{}') // no id, no name: dead-lettered at delivery
      const sub = events.topic(topic).consume({ group, claimMinIdleTime: 200, claimInterval: 100 }).subscribe()
      await waitFor(async () => (await pending(topic, group)) === 1, 5_000, 'the entry delivered')
      await sleep(300)
      expect(unhandled).toEqual([])
      expect(await pending(topic, group)).toBe(1) // not acked without its dead letter
      await redis.del(dlqKey(topic))
      await waitFor(async () => (await events.deadLetters.count(topic)) === 1, 5_000, 'moved on a later delivery')
      await waitFor(async () => (await pending(topic, group)) === 0, 5_000, 'nothing pending')
      expect((await events.deadLetters.list(topic))[0]?.error).toMatch(/^missing_field:/)
      sub.unsubscribe()
    } finally {
      process.off('unhandledRejection', onUnhandled)
      await redis.quit()
    }
  })
})
