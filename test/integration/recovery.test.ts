/**
 * Stale-consumer recovery and leases: the XAUTOCLAIM reply parser (Redis 7
 * and 6.2 shapes), true delivery counts of claimed entries, the delivery cap
 * on the claim path, claiming under full credit, stale-consumer deletion,
 * leases kept while a subscription drains, and the slow start of a restarted
 * consumer's re-read of its own pending entries.
 */
import { describe, expect, it } from 'vitest'
import { handleEach } from '../../operators/index.js'
import { parseAutoClaimReply, RedisBackend } from '../../src/backend/redis/redis-backend.js'
import { newEvent, type Message } from '../../src/index.js'
import { sleep, testEvents, waitFor } from '../support/events.js'
import { newRedis, randomName } from '../support/redis.js'

const streamKey = (topic: string): string => `event:stream:{${topic}}`

describe('parseAutoClaimReply', () => {
  it('reads the Redis 7 reply: cursor, entries, deleted ids', () => {
    const reply = ['1700000000005-0', [['1700000000001-0', ['id', 'a', 'name', 'x']], ['1700000000003-0', ['id', 'b']]], ['1700000000002-0', '1700000000004-0']]
    expect(parseAutoClaimReply(reply)).toEqual({
      cursor: '1700000000005-0',
      entries: [
        { id: '1700000000001-0', fields: ['id', 'a', 'name', 'x'] },
        { id: '1700000000003-0', fields: ['id', 'b'] },
      ],
      deletedIds: ['1700000000002-0', '1700000000004-0'],
      unnamedDeleted: 0,
    })
  })

  it('reads the Redis 6.2 reply: two elements, deleted entries as [id, nil] or a bare nil', () => {
    const reply = ['0-0', [['1-0', ['id', 'a']], ['2-0', null], null, ['3-0', ['id', 'c']], null]]
    expect(parseAutoClaimReply(reply)).toEqual({
      cursor: '0-0',
      entries: [
        { id: '1-0', fields: ['id', 'a'] },
        { id: '3-0', fields: ['id', 'c'] },
      ],
      deletedIds: ['2-0'],
      unnamedDeleted: 2,
    })
    expect(parseAutoClaimReply([Buffer.from('0-0'), []])).toEqual({ cursor: '0-0', entries: [], deletedIds: [], unnamedDeleted: 0 })
  })

  it('refuses what is not an XAUTOCLAIM reply', () => {
    expect(() => parseAutoClaimReply(null)).toThrow(/XAUTOCLAIM/)
    expect(() => parseAutoClaimReply(['0-0'])).toThrow(/XAUTOCLAIM/)
    expect(() => parseAutoClaimReply(['0-0', 'x'])).toThrow(/XAUTOCLAIM/)
  })
})

describe('claiming', () => {
  it('claimed entries carry their true delivery counts, even between the claimer’s own pending entries', async () => {
    const events = testEvents()
    const backend = events.backend
    if (!(backend instanceof RedisBackend)) throw new Error('the integration tests run on Redis')
    const topic = randomName('counts')
    const group = randomName('g')
    const key = streamKey(topic)
    const redis = newRedis()
    try {
      const ids = await events.publishBatch(topic, Array.from({ length: 6 }, (_, i) => newEvent('n', i)))
      await redis.xgroup('CREATE', key, group, '0')
      await redis.xreadgroup('GROUP', group, 'dead', 'COUNT', 6, 'STREAMS', key, '>')
      // The claimer owns every other entry, freshly (not idle): e0 e2 e4 stay with "dead".
      await redis.xclaim(key, group, 'alive', 0, ids[1]!, ids[3]!, ids[5]!, 'JUSTID')
      await sleep(150)
      await redis.xclaim(key, group, 'alive', 0, ids[1]!, ids[3]!, ids[5]!, 'JUSTID')
      const result = await backend.claimIdle(topic, group, 'alive', { minIdleMs: 100, cursor: '0-0', count: 10 })
      expect(result.entries.map((e) => [e.id, e.deliveryCount])).toEqual([
        [ids[0], 2],
        [ids[2], 2],
        [ids[4], 2],
      ])
      expect(result.cursor).toBe('0-0')
    } finally {
      await redis.quit()
    }
  })

  it('an entry claimed past maxRetries + 1 deliveries goes to the DLQ without reaching the handler', async () => {
    const events = testEvents({ maxRetries: 1 })
    const topic = randomName('cap')
    const group = randomName('g')
    const key = streamKey(topic)
    const redis = newRedis()
    try {
      const [id] = await events.publishBatch(topic, [newEvent('crashes', 1)])
      await redis.xgroup('CREATE', key, group, '0')
      await redis.xreadgroup('GROUP', group, 'crashed-1', 'COUNT', 1, 'STREAMS', key, '>') // delivery 1
      await redis.xclaim(key, group, 'crashed-2', 0, id!) // delivery 2: both consumers died while handling it
      const seen: Message[] = []
      const sub = events.topic(topic).consume({ group, claimMinIdleTime: 100, claimInterval: 50 }).subscribe((m) => seen.push(m))
      await waitFor(async () => (await events.deadLetters.count(topic)) === 1, 5_000, 'the dead letter')
      const [letter] = await events.deadLetters.list(topic)
      expect(letter).toMatchObject({ originalId: id, group, attempts: 2 })
      expect(letter?.error).toMatch(/delivery limit exceeded/)
      expect(seen).toEqual([])
      await waitFor(async () => ((await redis.xpending(key, group)) as [number])[0] === 0, 5_000, 'nothing pending')
      sub.unsubscribe()
    } finally {
      await redis.quit()
    }
  })

  it('a consumer whose credit is always used up still reclaims a dead consumer’s entries within claimMinIdleTime + claimInterval + 1 s', async () => {
    const events = testEvents()
    const topic = randomName('busy')
    const group = randomName('g')
    const key = streamKey(topic)
    const redis = newRedis()
    const claimMinIdleTime = 300
    const claimInterval = 100
    try {
      await events.publishBatch(topic, Array.from({ length: 120 }, (_, i) => newEvent('n', i)))
      await redis.xgroup('CREATE', key, group, '0')
      const deadAt = Date.now()
      await redis.xreadgroup('GROUP', group, 'dead', 'COUNT', 3, 'STREAMS', key, '>') // payloads 0, 1, 2
      const handledAt = new Map<number, number>()
      const sub = events
        .topic(topic)
        .consume({ group, consumer: 'busy', maxPendingMessages: 5, batchSize: 5, claimMinIdleTime, claimInterval, drainTimeout: 100 })
        .pipe(
          handleEach(async (m) => {
            await sleep(20)
            handledAt.set(m.event.payload as number, Date.now())
          }),
        )
        .subscribe()
      await waitFor(() => [0, 1, 2].every((n) => handledAt.has(n)), 10_000, 'the dead consumer’s entries handled')
      const reclaimedIn = Math.max(...[0, 1, 2].map((n) => handledAt.get(n)!)) - deadAt
      expect(handledAt.size).toBeLessThan(120) // the backlog was still there: the credit was used up all along
      console.log(`[recovery] reclaimed under full credit in ${reclaimedIn} ms (bound ${claimMinIdleTime + claimInterval + 1_000} ms)`)
      expect(reclaimedIn).toBeLessThanOrEqual(claimMinIdleTime + claimInterval + 1_000)
      sub.unsubscribe()
    } finally {
      await redis.quit()
    }
  })
})

describe('stale consumers', () => {
  it('deletes consumers idle past staleConsumerTimeout with nothing pending, never one with pending entries', async () => {
    const events = testEvents({ staleConsumerTimeout: 300 })
    const topic = randomName('stale')
    const group = randomName('g')
    const key = streamKey(topic)
    const redis = newRedis()
    const names = async (): Promise<Map<string, number>> => {
      const rows = (await redis.xinfo('CONSUMERS', key, group)) as unknown[][]
      return new Map(rows.map((r) => [String(r[r.indexOf('name') + 1]), Number(r[r.indexOf('pending') + 1])]))
    }
    try {
      await events.publish(topic, newEvent('n', 1))
      await redis.xgroup('CREATE', key, group, '0')
      await redis.xreadgroup('GROUP', group, 'gone-with-work', 'COUNT', 1, 'STREAMS', key, '>')
      await redis.call('XGROUP', 'CREATECONSUMER', key, group, 'gone-empty')
      // This live consumer claims nothing (claimMinIdleTime is long) but cleans up every 100 ms.
      const sub = events.topic(topic).consume({ group, consumer: 'live', claimMinIdleTime: 600_000, claimInterval: 100 }).subscribe()
      await waitFor(async () => !(await names()).has('gone-empty'), 5_000, 'the idle empty consumer deleted')
      await sleep(500)
      const left = await names()
      expect(left.get('gone-with-work')).toBe(1)
      expect(left.has('live')).toBe(true)
      sub.unsubscribe()
    } finally {
      await redis.quit()
    }
  })
})

describe('leases', () => {
  it('are renewed while a stopping subscription drains: a handler still running is not claimed by another consumer', async () => {
    const events = testEvents()
    const topic = randomName('drain')
    const group = randomName('g')
    const claimMinIdleTime = 300
    const handledBy: string[] = []
    const a = events.topic(topic).consume({ group, consumer: 'a', claimMinIdleTime, claimInterval: 50, drainTimeout: 5_000 }).subscribe((m) => {
      handledBy.push(m.consumer)
      setTimeout(() => void m.ack(), 4 * claimMinIdleTime)
    })
    await events.publish(topic, newEvent('long', 1))
    await waitFor(() => handledBy.length === 1, 5_000, 'a handles it')
    const b = events.topic(topic).consume({ group, consumer: 'b', claimMinIdleTime, claimInterval: 50 }).subscribe((m) => {
      handledBy.push(m.consumer)
      void m.ack()
    })
    a.unsubscribe() // drains: a's handler runs for 4 × claimMinIdleTime more
    const redis = newRedis()
    try {
      await waitFor(async () => ((await redis.xpending(streamKey(topic), group)) as [number])[0] === 0, 5_000, 'acked by a')
      await sleep(claimMinIdleTime)
      expect(handledBy).toEqual(['a'])
    } finally {
      await redis.quit()
      b.unsubscribe()
    }
  })
})

/**
 * Records messages in delivery batches: the messages of one read are emitted
 * synchronously, one after the other; a microtask boundary ends a batch.
 */
function batchRecorder(): { readonly batches: Message[][]; readonly all: Message[]; readonly record: (m: Message) => void } {
  const batches: Message[][] = []
  const all: Message[] = []
  let open: Message[] | undefined
  return {
    batches,
    all,
    record(m) {
      all.push(m)
      if (open === undefined) {
        const batch: Message[] = []
        open = batch
        batches.push(batch)
        queueMicrotask(() => (open = undefined))
      }
      open.push(m)
    },
  }
}

/** Simulates a crash: `consumer` read `count` entries (delivery 1 each) and never settled them. */
async function crashedWith(redis: ReturnType<typeof newRedis>, topic: string, group: string, consumer: string, count: number): Promise<string[]> {
  const events = testEvents()
  const ids = await events.publishBatch(topic, Array.from({ length: count }, (_, i) => newEvent('n', i)))
  await redis.xgroup('CREATE', streamKey(topic), group, '0')
  await redis.xreadgroup('GROUP', group, consumer, 'COUNT', count, 'STREAMS', streamKey(topic), '>')
  return ids
}

/** Delivery counts of the group's pending entries, by id. */
async function deliveryCounts(redis: ReturnType<typeof newRedis>, topic: string, group: string): Promise<Map<string, number>> {
  const rows = (await redis.xpending(streamKey(topic), group, '-', '+', 10_000)) as [string, string, number, number][]
  return new Map(rows.map(([id, , , deliveries]) => [id, deliveries]))
}

describe('slow start of recovery', () => {
  it('a restarted consumer re-reads its pending entries 1, 2, 4, ... at a time; only the entries delivered get their counts bumped', async () => {
    const events = testEvents()
    const topic = randomName('slow')
    const group = randomName('g')
    const redis = newRedis()
    try {
      const ids = await crashedWith(redis, topic, group, 'restarted', 12)
      const recorder = batchRecorder()
      const sub = events
        .topic(topic)
        .consume({ group, consumer: 'restarted', maxPendingMessages: 100, batchSize: 10, claimInterval: 0, drainTimeout: 50 })
        .subscribe(recorder.record)
      const settleRound = async (delivered: number): Promise<void> => {
        await waitFor(() => recorder.all.length >= delivered, 2_000, `${delivered} deliveries`)
        await sleep(100) // well within the 1 s probation: nothing more comes in
        expect(recorder.all).toHaveLength(delivered)
      }
      await settleRound(1)
      const counts = await deliveryCounts(redis, topic, group)
      expect(counts.get(ids[0]!)).toBe(2)
      expect(ids.slice(1).map((id) => counts.get(id))).toEqual(ids.slice(1).map(() => 1)) // not re-read yet: not bumped
      for (const [n, delivered] of [
        [1, 3],
        [2, 7],
        [4, 12],
      ] as const) {
        for (const m of recorder.batches[recorder.batches.length - 1]!) void m.ack()
        expect(recorder.batches.at(-1)).toHaveLength(n)
        await settleRound(delivered)
      }
      expect(recorder.batches.map((b) => b.length)).toEqual([1, 2, 4, 5]) // the window would let 8 in; 5 were left
      expect(recorder.all.map((m) => m.streamId)).toEqual(ids)
      expect(recorder.all.every((m) => m.deliveryCount === 2)).toBe(true)
      for (const m of recorder.batches.at(-1)!) void m.ack()
      // New entries are not limited: a batch of 10 comes in at once.
      await events.publishBatch(topic, Array.from({ length: 10 }, (_, i) => newEvent('new', i)))
      await waitFor(() => recorder.all.length === 22, 2_000, 'the new entries')
      expect(recorder.batches.at(-1)).toHaveLength(10)
      sub.unsubscribe()
    } finally {
      await redis.quit()
    }
  })

  it('a parked message (holdUntil(Infinity), as a window does) lets the next ones in at once', async () => {
    const events = testEvents()
    const topic = randomName('parked')
    const group = randomName('g')
    const redis = newRedis()
    try {
      const ids = await crashedWith(redis, topic, group, 'restarted', 6)
      const recorder = batchRecorder()
      const startedAt = Date.now()
      const sub = events
        .topic(topic)
        .consume({ group, consumer: 'restarted', maxPendingMessages: 100, batchSize: 10, claimInterval: 0, drainTimeout: 50 })
        .subscribe((m) => {
          recorder.record(m)
          m.holdUntil(Number.POSITIVE_INFINITY)
        })
      await waitFor(() => recorder.all.length === 6, 2_000, 'every pending entry')
      const tookMs = Date.now() - startedAt
      expect(tookMs).toBeLessThan(900) // not one probation (1 s) per round
      expect(recorder.batches.map((b) => b.length)).toEqual([1, 2, 3])
      expect(recorder.all.map((m) => m.streamId)).toEqual(ids)
      console.log(`[slow start] 6 parked pending entries re-read in ${tookMs} ms`)
      sub.unsubscribe()
    } finally {
      await redis.quit()
    }
  })

  it('a message held unsettled (not parked) keeps the next ones out until it has survived 1 s', async () => {
    const events = testEvents()
    const topic = randomName('held')
    const group = randomName('g')
    const redis = newRedis()
    try {
      await crashedWith(redis, topic, group, 'restarted', 3)
      const recorder = batchRecorder()
      const at: number[] = []
      const sub = events
        .topic(topic)
        .consume({ group, consumer: 'restarted', maxPendingMessages: 100, batchSize: 10, claimInterval: 0, drainTimeout: 50 })
        .subscribe((m) => {
          recorder.record(m)
          at.push(Date.now())
        })
      await waitFor(() => recorder.all.length === 3, 3_000, 'every pending entry')
      expect(recorder.batches.map((b) => b.length)).toEqual([1, 2])
      expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(900)
      sub.unsubscribe()
    } finally {
      await redis.quit()
    }
  })

  it('measures: recovery time of N pending entries with an immediate ack', async () => {
    for (const n of [100, 1_000]) {
      const events = testEvents()
      const topic = randomName('measure')
      const group = randomName('g')
      const redis = newRedis()
      try {
        await crashedWith(redis, topic, group, 'restarted', n)
        let handled = 0
        const startedAt = performance.now()
        const sub = events
          .topic(topic)
          .consume({ group, consumer: 'restarted', maxPendingMessages: 100, batchSize: 10, claimInterval: 0, drainTimeout: 50 })
          .subscribe((m) => {
            handled++
            void m.ack()
          })
        await waitFor(() => handled === n, 10_000, `${n} recovered`)
        const ms = performance.now() - startedAt
        console.log(`[slow start] ${n} pending entries recovered (acked at once) in ${ms.toFixed(0)} ms`)
        sub.unsubscribe()
        await waitFor(async () => (await deliveryCounts(redis, topic, group)).size === 0, 5_000, 'all acked')
      } finally {
        await redis.quit()
      }
    }
  })
})
