/**
 * The retry-safe publish's memory of event ids (issue 14): one hash per topic
 * and window-long bucket of the server's clock (`event:published:{topic}::<W>:<b>`),
 * the current and the previous bucket looked up, so an id is remembered for at
 * least the window whatever bucket boundary falls between a publish and its
 * retry. On private redis-servers: a lost reply through a fault proxy, the
 * window's edge, a bucket rollover, the earlier layout's keys after an
 * upgrade, and the Cluster slot of the buckets.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Cluster, Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { entryEventId } from '../support/entries.js'
import { createEventManager, newEvent, PublishOutcomeUnknownError, type Event, type EventManager, type EventManagerOptions } from '../../src/index.js'
import type { FaultProxy } from '../support/fault-proxy.js'
import { startRedisCluster, type RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { withProxiedServer } from '../support/proxied-server.js'

let proxy: FaultProxy
let direct: Redis
let server: RedisServer
withProxiedServer((s) => ({ proxy, direct, server } = s), { maxRetriesPerRequest: 3 })

function manager(options: EventManagerOptions = {}): EventManager {
  return createEventManager({ redisUrl: proxy.url, env: {}, delayedQueueEnabled: false, commandTimeout: 3_000, ...options })
}

/** The server's clock, in ms. */
async function serverMs(client: Redis = direct): Promise<number> {
  const [s, us] = await client.time()
  return Number(s) * 1_000 + Math.floor(Number(us) / 1_000)
}

/** Polls the server's clock until `accept` says yes; returns that time. */
async function untilServerTime(accept: (ms: number) => boolean): Promise<number> {
  for (;;) {
    const now = await serverMs()
    if (accept(now)) return now
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** How many entries of the topic carry this event id. */
async function copies(topic: string, eventId: string): Promise<number> {
  const entries = await direct.xrange(`event:stream:{${topic}}`, '-', '+')
  return entries.filter(([, fields]) => entryEventId(fields) === eventId).length
}

const bucketKey = (topic: string, windowMs: number, bucket: number): string => `event:published:{${topic}}::${windowMs}:${bucket}`

describe('retry-safe publish: event ids in window-long buckets of the server clock', () => {
  it('a retried append after a lost reply is not duplicated; the id is in the bucket hash, no key per event', async () => {
    const events = manager()
    const topic = randomName('bk-lost')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const event = newEvent('order.placed', { n: 1 })
      proxy.dropNextReplies(1) // executed on the server, reply swallowed, connection reset
      let id: string
      try {
        id = await events.publish(topic, event)
      } catch (error) {
        expect(error).toBeInstanceOf(PublishOutcomeUnknownError)
        id = await events.publish(topic, event)
      }
      expect(await copies(topic, event.id)).toBe(1)
      const buckets = await direct.keys(`event:published:{${topic}}::*`)
      const held = await Promise.all(buckets.map((key) => direct.hget(key, event.id)))
      expect(held.filter((v) => v !== null)).toEqual([id])
      for (const key of buckets) {
        const pttl = await direct.pttl(key)
        expect(pttl).toBeGreaterThan(0)
        expect(pttl).toBeLessThanOrEqual(3 * 5 * 60_000)
      }
      expect((await direct.keys(`event:published:{${topic}}:*`)).filter((key) => !key.startsWith(`event:published:{${topic}}::`))).toEqual([])
    } finally {
      await events.close()
    }
  }, 30_000)

  it('a duplicate just under one window after the first publish (in the next bucket) is caught', async () => {
    const windowMs = 3_000
    const events = manager({ publishDedupeWindow: windowMs })
    const topic = randomName('bk-edge')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      // The first publish early in a bucket: a retry one window later falls in the next one.
      await untilServerTime((ms) => ms % windowMs < 200)
      const event = newEvent('edge', 1)
      const first = await events.publish(topic, event)
      const firstMs = Number(first.split('-')[0])
      const bucket = Math.floor(firstMs / windowMs)
      // Just under one window on, and in the next bucket: only the previous bucket remembers it.
      await untilServerTime((ms) => ms >= Math.max(firstMs + windowMs - 100, (bucket + 1) * windowMs))
      expect(await events.publish(topic, event)).toBe(first)
      expect(await direct.hexists(bucketKey(topic, windowMs, bucket + 1), event.id)).toBe(0)
      expect(await copies(topic, event.id)).toBe(1)
    } finally {
      await events.close()
    }
  }, 30_000)

  it('the server clock stepped back: an id in the bucket after the current one is still caught', async () => {
    const windowMs = 60_000
    const events = manager({ publishDedupeWindow: windowMs })
    const topic = randomName('bk-clock-back')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      const [seconds] = await direct.time()
      const bucket = Math.floor((Number(seconds) * 1_000) / windowMs)
      // What a clock one bucket ahead left behind: the id appended then sits in the next bucket.
      const event = newEvent('ahead', 1)
      const earlier = await events.publish(topic, newEvent('other', 2))
      await direct.hset(bucketKey(topic, windowMs, bucket + 1), event.id, earlier)
      expect(await events.publish(topic, event)).toBe(earlier)
      expect(await copies(topic, event.id)).toBe(0) // not appended: the earlier stream id came back
    } finally {
      await events.close()
    }
  })

  it('bucket rollover: published at the end of a bucket, retried just after it, then forgotten two buckets on', async () => {
    const windowMs = 2_000
    const events = manager({ publishDedupeWindow: windowMs })
    const topic = randomName('bk-roll')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      await untilServerTime((ms) => ms % windowMs >= windowMs - 150)
      const event = newEvent('roll', 1)
      const first = await events.publish(topic, event)
      const bucket = Math.floor(Number(first.split('-')[0]) / windowMs)
      await untilServerTime((ms) => Math.floor(ms / windowMs) === bucket + 1)
      expect(await events.publish(topic, event)).toBe(first) // found in the previous bucket
      expect(await direct.hget(bucketKey(topic, windowMs, bucket), event.id)).toBe(first)
      expect(await direct.hexists(bucketKey(topic, windowMs, bucket + 1), event.id)).toBe(0) // not copied forward
      // Two buckets on, more than a window has passed: appended again, under a new stream id.
      await untilServerTime((ms) => Math.floor(ms / windowMs) >= bucket + 2)
      const again = await events.publish(topic, event)
      expect(again).not.toBe(first)
      expect(await copies(topic, event.id)).toBe(2)
      // That call appended, so it freed the bucket before the previous one (its expiry is one bucket later).
      expect(await direct.exists(bucketKey(topic, windowMs, bucket))).toBe(0)
    } finally {
      await events.close()
    }
  }, 30_000)

  it('the same event twice in one batch and in one coalesced tick is appended once', async () => {
    const events = manager()
    const topic = randomName('bk-same')
    try {
      const a = newEvent('a', 1)
      const b = newEvent('b', 2)
      const ids = await events.publishBatch(topic, [a, b, a])
      expect(ids[2]).toBe(ids[0])
      const tick = await Promise.all([events.publish(topic, b), events.publish(topic, newEvent('c', 3)), events.publish(topic, b)])
      expect(tick[0]).toBe(ids[1])
      expect(tick[2]).toBe(ids[1])
      expect(await direct.xlen(`event:stream:{${topic}}`)).toBe(3)
    } finally {
      await events.close()
    }
  })

  it('upgrade: an event deduped under the earlier layout (a key per event id) is not appended again by a retry', async () => {
    const events = manager()
    const topic = randomName('bk-upgrade')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      // What the earlier version left for an event it appended just before the upgrade.
      const event: Event = newEvent('old', 1)
      const oldId = String(await direct.xadd(`event:stream:{${topic}}`, '*', 'id', event.id, 'name', 'old', 'ts', String(event.timestamp), 'headers', '{}', 'payload', '1'))
      await direct.set(`event:published:{${topic}}:${event.id}`, oldId, 'PX', 5 * 60_000)
      expect(await events.publish(topic, event)).toBe(oldId)
      expect(await events.publishBatch(topic, [newEvent('new', 2), event])).toEqual([expect.stringMatching(/^\d+-\d+$/), oldId])
      expect(await copies(topic, event.id)).toBe(1)
      // A key of another type at such a name is not a dedupe record: nothing fails.
      const odd = newEvent('odd', 3)
      await direct.hset(`event:published:{${topic}}:${odd.id}`, 'x', '1')
      await events.publish(topic, odd)
      expect(await copies(topic, odd.id)).toBe(1)
    } finally {
      await events.close()
    }
  })

  it('a bucket of another type is a Redis error reply for every caller of the tick: a BackendError, nothing appended', async () => {
    const windowMs = 60_000
    const events = manager({ publishDedupeWindow: windowMs })
    const topic = randomName('bk-wrongtype')
    try {
      await events.publish(topic, newEvent('warm.up', 0))
      await untilServerTime((ms) => ms % windowMs < windowMs - 5_000)
      const bucket = Math.floor((await serverMs()) / windowMs)
      await direct.del(bucketKey(topic, windowMs, bucket))
      await direct.set(bucketKey(topic, windowMs, bucket), 'not a hash')
      const results = await Promise.allSettled([newEvent('a', 1), newEvent('b', 2)].map((e) => events.publish(topic, e)))
      for (const r of results) {
        expect(r.status).toBe('rejected')
        expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'BACKEND_ERROR' })
        expect((r as PromiseRejectedResult).reason).not.toBeInstanceOf(PublishOutcomeUnknownError)
      }
      expect(await direct.xlen(`event:stream:{${topic}}`)).toBe(1)
    } finally {
      await events.close()
    }
  }, 30_000)
})

describe('retry-safe publish under a least-privilege ACL user', () => {
  const PASSWORD = randomBytes(12).toString('hex')
  const readmeLine = readFileSync(new URL('../../README.md', import.meta.url), 'utf8').split('\n').find((line) => line.startsWith('ACL SETUSER rrs-publisher ')) ?? ''
  const BUCKET_COMMANDS = ['+time', '+hmget', '+exists', '+mget', '+pexpireat', '+unlink']

  async function deduplicatesAs(user: string, without: readonly string[]): Promise<{ buckets: number; perEvent: number }> {
    const words = readmeLine
      .replace('>PASSWORD', `>${PASSWORD}`)
      .split(' ')
      .slice(2)
      .filter((word) => !without.includes(word))
    words[0] = user
    await direct.call('ACL', 'SETUSER', ...words)
    await direct.call('ACL', 'LOG', 'RESET')
    const events = createEventManager({ redisUrl: `redis://${user}:${PASSWORD}@${server.host}:${String(server.port)}`, env: {}, delayedQueueEnabled: false })
    const topic = randomName('bk-acl')
    try {
      const event = newEvent('a', 1)
      const [first, again] = await Promise.all([events.publish(topic, event), events.publish(topic, event)])
      expect(again).toBe(first)
      expect(await events.publishBatch(topic, [newEvent('b', 2), event])).toEqual([expect.stringMatching(/^\d+-\d+$/), first])
      expect(await copies(topic, event.id)).toBe(1)
      expect(await direct.call('ACL', 'LOG')).toEqual([])
      const keys = await direct.keys(`event:published:{${topic}}:*`)
      const buckets = keys.filter((key) => key.startsWith(`event:published:{${topic}}::`)).length
      return { buckets, perEvent: keys.length - buckets }
    } finally {
      await events.close()
    }
  }

  it('the README publisher rules as they are: the buckets, deduplicated, nothing refused', async () => {
    expect(readmeLine).not.toBe('')
    for (const command of BUCKET_COMMANDS) expect(readmeLine.split(' ')).toContain(command)
    expect(await deduplicatesAs('bk-pub-buckets', [])).toEqual({ buckets: 1, perEvent: 0 })
  })

  it('the rules of an earlier release (without the buckets\' commands): a key per event id, deduplicated, nothing refused', async () => {
    expect(await deduplicatesAs('bk-pub-plain', BUCKET_COMMANDS)).toEqual({ buckets: 0, perEvent: 2 })
  })
})

describe('retry-safe publish on a Redis Cluster', () => {
  it('the buckets live in the topic slot; a duplicate is caught across the tick, the batch and a second client', async () => {
    const cluster = await startRedisCluster({ masters: 3 })
    const hosts = cluster.nodes.map((n) => `${n.host}:${n.port}`)
    const one = createEventManager({ redisHosts: hosts, env: {}, delayedQueueEnabled: false })
    const two = createEventManager({ redisHosts: hosts, env: {}, delayedQueueEnabled: false })
    const client = new Cluster(cluster.nodes.map((n) => ({ host: n.host, port: n.port })))
    try {
      const topics = Array.from({ length: 6 }, () => randomName('bk-cl'))
      for (const topic of topics) {
        const event = newEvent('x', topic)
        const [first] = await Promise.all([one.publish(topic, event), one.publish(topic, newEvent('y', 1))])
        expect(await one.publishBatch(topic, [event])).toEqual([first])
        expect(await two.publish(topic, event)).toBe(first)
        const slot = Number(await client.call('CLUSTER', 'KEYSLOT', `event:stream:{${topic}}`))
        const buckets = (await Promise.all(client.nodes('master').map((n) => n.keys(`event:published:{${topic}}::*`)))).flat()
        expect(buckets.length).toBeGreaterThan(0)
        for (const key of buckets) expect(Number(await client.call('CLUSTER', 'KEYSLOT', key))).toBe(slot)
        expect(await client.xlen(`event:stream:{${topic}}`)).toBe(2)
      }
    } finally {
      await one.close()
      await two.close()
      client.disconnect()
      await cluster.stop()
    }
  }, 60_000)
})
