import { describe, expect, it } from 'vitest'
import { newEvent, type EventManager, type Message } from '../../src/index.js'
import { randomName } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

/**
 * A known state on one topic: 10 published (+1 delayed); group `main` (consumer
 * c1, credit 5) handled 3, dead-lettered 2 and holds the other 5; group `late`
 * (consumer c2, credit 4) holds 4 and has 6 left to read.
 */
async function knownState(events: EventManager): Promise<{ topic: string; main: string; late: string; ids: string[] }> {
  const topic = randomName('stats')
  const main = randomName('main')
  const late = randomName('late')
  const ids = await events.publishBatch(topic, Array.from({ length: 10 }, (_, i) => newEvent('order.created', { n: i })))
  await events.publishWithDelay(topic, newEvent('order.reminder', {}), 3_600_000)
  const seen: Message[] = []
  events.topic(topic).consume({ group: main, consumer: 'c1', maxPendingMessages: 5, batchSize: 5, consumerTimeout: 600_000, drainTimeout: 50 }).subscribe((m) => seen.push(m))
  await waitFor(() => seen.length === 5, 10_000, 'the first 5 messages')
  for (const m of seen.slice(0, 3)) await m.ack()
  for (const m of seen.slice(3, 5)) await m.deadLetter(new Error('card declined'))
  await waitFor(() => seen.length === 10, 10_000, 'the other 5 messages')
  const lateSeen: Message[] = []
  events.topic(topic).consume({ group: late, consumer: 'c2', maxPendingMessages: 4, batchSize: 10, consumerTimeout: 600_000, drainTimeout: 50 }).subscribe((m) => lateSeen.push(m))
  await waitFor(() => lateSeen.length === 4, 10_000, '4 messages of the late group')
  return { topic, main, late, ids }
}

describe('stats()', () => {
  it('reports length, ids, delayed, dead letters, pending, lag and consumers of a known state', async () => {
    const events = testEvents()
    const { topic, main, late, ids } = await knownState(events)

    const stats = await events.stats(topic)
    expect(Object.keys(stats.topics)).toEqual([topic])
    const t = stats.topics[topic]!
    expect(t).toMatchObject({ name: topic, length: 10, firstId: ids[0], lastId: ids[9], delayed: 1, deadLetters: 2 })
    expect(t).not.toHaveProperty('messagesCount')
    expect(Object.keys(t.groups).sort()).toEqual([late, main].sort())
    expect(t.groups[main]).toMatchObject({ topic, name: main, pending: 5, lag: 0, lost: 0, lastDeliveredId: ids[9] })
    expect(t.groups[main]).not.toHaveProperty('pendingMessagesCount')
    expect(t.groups[main]!.consumers).toEqual([{ name: 'c1', pending: 5, idleMs: expect.any(Number) as number }])
    expect(t.groups[main]!.consumers[0]!.idleMs).toBeLessThan(10_000)
    expect(t.groups[late]).toMatchObject({ pending: 4, lag: 6, lastDeliveredId: ids[3] })
    expect(t.groups[late]!.consumers).toMatchObject([{ name: 'c2', pending: 4 }])
    expect(stats.consumerGroups[main]).toEqual({ name: main, topics: [topic], pending: 5, lag: 0, lost: 0, consumers: 1 })
    expect(stats.consumerGroups[late]).toMatchObject({ pending: 4, lag: 6 })
    // The original spec's shape, from its one accessor.
    const spec = await events.specStats(topic)
    expect(spec.topics[topic]).toEqual({ messagesCount: 10, delayedCount: 1, deadLetterCount: 2 })
    expect(spec.consumerGroups[main]).toEqual({ pendingMessagesCount: 5, lag: 0, consumersCount: 1 })
    expect(JSON.parse(JSON.stringify(spec))).toMatchObject({ topics: { [topic]: { messagesCount: 10 } }, consumerGroups: { [late]: { pendingMessagesCount: 4, lag: 6 } } })
  })

  it('lists every registered topic, and sums a group over the topics it consumes', async () => {
    const events = testEvents()
    const [a, b] = [randomName('a'), randomName('b')]
    const group = randomName('g')
    await events.publishBatch(a, [newEvent('x', 1), newEvent('x', 2)])
    await events.publish(b, newEvent('x', 3))
    const seen: Message[] = []
    for (const topic of [a, b]) events.consume(topic, { group, drainTimeout: 50 }).subscribe((m) => seen.push(m))
    await waitFor(() => seen.length === 3)
    const stats = await events.stats()
    expect(stats.topics[a]?.length).toBe(2)
    expect(stats.topics[b]?.length).toBe(1)
    expect(stats.consumerGroups[group]).toMatchObject({ topics: [a, b].sort(), pending: 3, consumers: 2 })
  })

  it('reads an unregistered topic as empty and refuses an invalid name', async () => {
    const events = testEvents()
    const topic = randomName('never')
    const stats = await events.stats(topic)
    expect(stats.topics[topic]).toMatchObject({ length: 0, firstId: null, lastId: null, delayed: 0, deadLetters: 0, groups: {} })
    await expect(events.stats('bad topic')).rejects.toMatchObject({ code: 'INVALID_TOPIC' })
  })
})

describe('health() on the known state', () => {
  it('is ok, with the PING round trip, each subscription paused by its credit, claimers and the promoter alive', async () => {
    const events = testEvents()
    const { topic, main, late } = await knownState(events)
    const before = Date.now()
    const report = await events.health()
    expect(report.ok).toBe(true)
    expect(report.reasons).toEqual([])
    expect(report.redis).toMatchObject({ kind: 'redis', reachable: true })
    expect(report.redis.latencyMs).toBeGreaterThanOrEqual(0)
    expect(report.redis.latencyMs).toBeLessThan(1_000)
    const subs = [...report.subscriptions].sort((x, y) => x.consumer.localeCompare(y.consumer))
    expect(subs).toMatchObject([
      { topic, group: main, consumer: 'c1', state: 'paused', held: 5, claimerAlive: true },
      { topic, group: late, consumer: 'c2', state: 'paused', held: 4, claimerAlive: true },
    ])
    for (const s of subs) {
      expect(s.lastReadAt).toBeGreaterThan(before - 10_000)
      expect(s.lastReadAgoMs).toBeGreaterThanOrEqual(0)
    }
    expect(report.promoters).toMatchObject([{ topic, alive: true }])
    await expect(events.assertHealthy()).resolves.toBeUndefined()
  })

  it('reports a closed manager as not ok', async () => {
    const events = testEvents()
    await events.close()
    const report = await events.health()
    expect(report.ok).toBe(false)
    expect(report.reasons).toEqual(['the event manager is closed'])
    await expect(events.assertHealthy()).rejects.toMatchObject({ code: 'UNHEALTHY' })
  })
})
