import { describe, expect, it } from 'vitest'
import { encodeEvent, newEvent } from '../../src/index.js'
import { newRedis, randomName } from '../support/redis.js'
import { testEvents } from '../support/events.js'

const streamKey = (topic: string): string => `event:stream:{${topic}}`

describe('stats(): lag (issue 15, item 12)', () => {
  it('is 0 when nothing lies after the group’s last-delivered id, whatever XINFO GROUPS says', async () => {
    const events = testEvents()
    const topic = randomName('lag')
    const group = randomName('g')
    const redis = newRedis()
    try {
      await events.publishBatch(topic, [newEvent('a', 1), newEvent('b', 2)])
      await events.backend.ensureGroup(topic, group, 'beginning')
      const reader = events.backend.createReader()
      expect(await reader.read(topic, group, 'c1', { count: 10, blockMs: 0, from: 'new' })).toHaveLength(2)
      await reader.close()
      // Counters as a promoted replica that full-synced mid-stream has them on 7.0: entries-added far ahead.
      const lastId = (await redis.xrevrange(streamKey(topic), '+', '-', 'COUNT', 1))[0]?.[0] ?? ''
      await redis.call('XSETID', streamKey(topic), lastId, 'ENTRIESADDED', '2702')
      const raw = (await redis.xinfo('GROUPS', streamKey(topic))) as unknown[][]
      expect(raw[0]?.[raw[0].indexOf('lag') + 1]).toBe(2_700) // what Redis reports
      const stats = await events.stats(topic)
      expect(stats.topics[topic]?.groups[group]?.lag).toBe(0)
      expect(stats.consumerGroups[group]?.lag).toBe(0)

      // With one entry after the last-delivered id, Redis' own figure stands.
      await events.publish(topic, newEvent('c', 3))
      expect((await events.stats(topic)).topics[topic]?.groups[group]?.lag).toBeGreaterThan(0)
    } finally {
      await redis.quit()
    }
  })
})

describe('stats(): entries lost to trimming (issue 15, item 13)', () => {
  it('counts pending entries trimmed before they were handled, per group, kept in Redis (every process sees it)', async () => {
    const events = testEvents()
    const other = testEvents() // another process: its stats read the same count
    const topic = randomName('lost')
    const group = randomName('g')
    const redis = newRedis()
    try {
      await events.backend.append(topic, Array.from({ length: 5 }, (_, i) => encodeEvent(newEvent('x', i), 1_000_000)))
      await events.backend.ensureGroup(topic, group, 'beginning')
      const reader = events.backend.createReader()
      expect(await reader.read(topic, group, 'crashed', { count: 3, blockMs: 0, from: 'new' })).toHaveLength(3)
      expect(await reader.read(topic, group, 'restarted', { count: 2, blockMs: 0, from: 'new' })).toHaveLength(2)
      await redis.xtrim(streamKey(topic), 'MAXLEN', 0)
      expect((await events.stats(topic)).topics[topic]?.groups[group]?.lost).toBe(0)

      // A consumer that restarts under its name re-reads its 2 pending entries without bodies (and acks them as lost, as the engine does).
      const own = await reader.read(topic, group, 'restarted', { count: 10, blockMs: 0, from: 'pending' })
      expect(own.map((e) => e.fields)).toEqual([null, null])
      await events.backend.ack(topic, group, own.map((e) => e.id))
      await reader.close()
      // A claimer finds the crashed consumer's 3 entries gone (XAUTOCLAIM removes them from the PEL).
      const claim = await events.backend.claimIdle(topic, group, 'claimer', { minIdleMs: 0, cursor: '0-0', count: 10 })
      expect(claim.deletedIds).toHaveLength(3)

      expect((await events.stats(topic)).topics[topic]?.groups[group]?.lost).toBe(5)
      expect((await other.stats(topic)).topics[topic]?.groups[group]?.lost).toBe(5)
      expect((await other.stats(topic)).consumerGroups[group]?.lost).toBe(5)
    } finally {
      await redis.quit()
    }
  })
})
