/**
 * Fault: a consumer process SIGKILLed while it handles a batch, three times.
 * Its pending entries must be reclaimed by the others, and every event must
 * end handled (at least once) and acked, or in the dead letter queue exactly
 * once. The test keeps a backlog of unhandled events until the last victim
 * is killed, so every victim finds work however fast the machine drains the
 * stream; the time to reclaim is printed, not asserted (its design bound is
 * claimMinIdleTime + claimInterval + 1 s).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEventManager, newEvent } from '../../src/index.js'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { newRedis, randomName } from '../support/redis.js'
import { sleep, waitFor } from '../support/events.js'
import { entryEventId } from '../support/entries.js'
import type { FixtureConfig } from './fixtures/consumer.js'
import { dlqKey, pendingByConsumer, readLedger, startFixture, streamKey, tempLedger, type Fixture } from './helpers.js'

const CLAIM_MIN_IDLE = 1_000
const CLAIM_INTERVAL = 500
/** Unhandled events the publisher keeps in the stream until the last victim is killed. */
const BACKLOG = 300
const TOP_UP = 100

let server: RedisServer

beforeAll(async () => {
  server = await startRedisServer()
})

afterAll(async () => {
  await server.stop()
})

describe('SIGKILL mid-batch', () => {
  it('reclaims a killed consumer’s pending entries in time; every event ends acked or dead-lettered once', async () => {
    const topic = randomName('kill')
    const group = randomName('g')
    const ledger = tempLedger()
    const redis = newRedis(server.url)
    const fixtures: Fixture[] = []
    const stopTopUp = new AbortController()
    try {
      const events = createEventManager({ redisUrl: server.url, env: {} })
      const ids: string[] = []
      const publishSome = async (n: number): Promise<void> => {
        const batch = Array.from({ length: n }, (_, j) => newEvent('n', ids.length + j))
        ids.push(...batch.map((e) => e.id))
        await events.publishBatch(topic, batch)
      }
      const handled = (): number => new Set(readLedger(ledger.path).filter((l) => l.k === 'done').map((l) => l.e)).size
      await publishSome(BACKLOG)
      const topUp = (async () => {
        while (!stopTopUp.signal.aborted) {
          if (ids.length - handled() < BACKLOG) await publishSome(TOP_UP)
          await sleep(50)
        }
      })()

      const base = (consumer: string): FixtureConfig => ({
        mode: 'consume',
        redisUrl: server.url,
        topic,
        group,
        ledger: ledger.path,
        manager: { maxRetries: 5, retryBackoff: 50 },
        consume: { consumer, claimMinIdleTime: CLAIM_MIN_IDLE, claimInterval: CLAIM_INTERVAL, batchSize: 5, maxPendingMessages: 10, blockMs: 500, consumerTimeout: 10_000 },
        concurrency: 2,
        handleMs: 15,
      })
      fixtures.push(startFixture(base('steady-a')), startFixture(base('steady-b')))
      const reclaimMs: number[] = []
      const heldAtKill: number[] = []
      for (let round = 1; round <= 3; round++) {
        const name = `victim-${round}`
        const victim = startFixture(base(name))
        fixtures.push(victim)
        // Generous: it covers the start of a process (tsx) on a loaded machine; the backlog makes sure there is work.
        await waitFor(() => readLedger(ledger.path).filter((l) => l.k === 'done' && l.c === name).length >= 30, 60_000, `${name} handling`)
        victim.kill('SIGKILL')
        const killedAt = Date.now()
        await victim.exited
        heldAtKill.push((await pendingByConsumer(redis, streamKey(topic), group)).byConsumer.get(name) ?? 0)
        await waitFor(async () => ((await pendingByConsumer(redis, streamKey(topic), group)).byConsumer.get(name) ?? 0) === 0, 30_000, `${name}'s entries reclaimed`)
        reclaimMs.push(Date.now() - killedAt)
      }
      stopTopUp.abort()
      await topUp
      await events.close()
      const total = ids.length
      fixtures.push(startFixture(base('victim-4')))

      const dlqEventIds = async (): Promise<string[]> =>
        (await redis.xrange(dlqKey(topic), '-', '+')).map(([, f]) => entryEventId(f))
      await waitFor(
        async () => {
          const done = new Set(readLedger(ledger.path).filter((l) => l.k === 'done').map((l) => l.e))
          for (const id of await dlqEventIds()) done.add(id)
          return done.size === total && (await pendingByConsumer(redis, streamKey(topic), group)).total === 0
        },
        60_000,
        'every event handled or dead-lettered, nothing pending',
      )

      const lines = readLedger(ledger.path)
      const doneCount = new Map<string, number>()
      for (const l of lines) if (l.k === 'done' && l.e !== undefined) doneCount.set(l.e, (doneCount.get(l.e) ?? 0) + 1)
      const dlq = await dlqEventIds()
      expect(new Set(dlq).size).toBe(dlq.length) // dead-lettered at most once
      for (const id of ids) expect(doneCount.has(id) || dlq.includes(id)).toBe(true)
      const [info] = (await redis.xinfo('GROUPS', streamKey(topic))) as unknown[][]
      const record = new Map<unknown, unknown>()
      for (let i = 0; i + 1 < (info?.length ?? 0); i += 2) record.set(info?.[i], info?.[i + 1])
      expect(record.get('pending')).toBe(0)
      expect(record.get('last-delivered-id')).toBe((await redis.xrevrange(streamKey(topic), '+', '-', 'COUNT', 1))[0]?.[0])
      expect(heldAtKill.some((n) => n > 0)).toBe(true)
      const duplicates = [...doneCount.values()].filter((n) => n > 1).length
      console.log(
        `[sigkill] ${total} events; pending at kill ${heldAtKill.join(', ')}; reclaimed in ${reclaimMs.join(', ')} ms (bound ${CLAIM_MIN_IDLE + CLAIM_INTERVAL + 1_000} ms); ` +
          `handled twice or more: ${duplicates}; dead-lettered: ${dlq.length}`,
      )
    } finally {
      stopTopUp.abort()
      await Promise.all(fixtures.map((f) => f.stop()))
      await redis.quit()
      ledger.cleanup()
    }
  }, 240_000)
})
