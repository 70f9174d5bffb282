/**
 * The shared connection writes the adapter's appends at once, outside ioredis'
 * autopipeline (redis-backend.ts, defineScripts): ioredis keeps one
 * autopipeline in flight per connection, and a publish queued behind one
 * (acks, lease renewals, the previous append) waited for all of its replies
 * before Redis saw it. XGROUP goes at once too, so that a group created at
 * `$` still precedes a publish made right after it in the same tick.
 */
import type { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { createEventManager, newEvent, type Message } from '../../src/index.js'
import type { RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { waitFor } from '../support/events.js'
import { withHoldingServer, type HoldingProxy } from '../support/holding-proxy.js'

let server: RedisServer
let direct: Redis
let proxy: HoldingProxy
withHoldingServer((s) => ({ server, direct, proxy } = s))

const streamKey = (topic: string): string => `event:stream:{${topic}}`
const isPing = (chunk: Buffer): boolean => /\r\nping\r\n/i.test(chunk.toString('latin1'))

describe('appends on the shared connection', () => {
  for (const dedupe of [true, false]) {
    it(`an append ${dedupe ? '(retry-safe)' : '(dedupe off)'} reaches Redis while an autopipeline of the same connection waits for its replies`, async () => {
      const topic = randomName('direct-append')
      const events = createEventManager({ redisUrl: proxy.url(), env: {}, delayedQueueEnabled: false, ...(dedupe ? {} : { publishDedupeWindow: 0 }) })
      try {
        await events.publish(topic, newEvent('warm.up', {}))
        const client = (events.backend as unknown as { readonly client: Redis }).client
        // From the PING on, every reply of the shared connection is held: the autopipeline carrying it stays in flight.
        proxy.hold(isPing)
        const pinged = client.ping()
        await waitFor(() => proxy.held() > 0, 10_000, 'the PING answered (and held)')
        const published = events.publish(topic, newEvent('behind.ping', { n: 1 }))
        // Redis runs the append although the pipeline before it is still waiting for its reply.
        await waitFor(async () => (await direct.xlen(streamKey(topic))) === 2, 10_000, 'the append to reach Redis')
        proxy.release()
        expect(await pinged).toBe('PONG')
        const id = await published
        const entries = await direct.xrange(streamKey(topic), '-', '+')
        expect(entries.map(([entryId]) => entryId)).toEqual([entries[0]?.[0], id])
      } finally {
        await events.close()
      }
    })
  }

  it('a group created at the latest entry in the same tick as a publish gets that publish', async () => {
    const topic = randomName('same-tick')
    const events = createEventManager({ redisUrl: server.url, env: {}, delayedQueueEnabled: false })
    try {
      await events.publish(topic, newEvent('before', {})) // the stream exists: `$` is after this entry
      const seen: string[] = []
      const sub = events
        .topic(topic)
        .consume({ group: randomName('g'), startFrom: 'latest' })
        .subscribe((m: Message) => {
          seen.push(m.event.name)
          void m.ack()
        })
      const published = events.publish(topic, newEvent('same.tick', {}))
      await published
      await waitFor(() => seen.length > 0, 10_000, 'the event published in the subscribing tick')
      expect(seen).toEqual(['same.tick'])
      sub.unsubscribe()
    } finally {
      await events.close()
    }
  })
})
