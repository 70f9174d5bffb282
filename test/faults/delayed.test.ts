/**
 * Fault: three processes schedule and promote delayed events on one topic at
 * once. Promotion is one Lua script, so each event must reach the stream
 * exactly once, never before its due time. Prints the lateness p50/p99.
 */
import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { newRedis, randomName } from '../support/redis.js'
import { sleep, waitFor } from '../support/events.js'
import { idMs, percentile, readLedger, startFixture, streamKey, tempLedger, type Fixture } from './helpers.js'

const EVENTS = 1_000
const PROCESSES = 3
const SPREAD_MS = 3_000

let server: RedisServer

beforeAll(async () => {
  server = await startRedisServer()
})

afterAll(async () => {
  await server.stop()
})

describe('delayed events under concurrent promoters', () => {
  it('1,000 events due over 0–3 s, three processes promoting: each appears once, none early', async () => {
    const topic = randomName('delayed')
    const ledger = tempLedger()
    const redis = newRedis(server.url)
    const fixtures: Fixture[] = []
    // The processes start the clock together, when all are up: a slow start of one (tsx, a loaded machine) must not
    // leave the others promoting alone, nor count against the time the scheduling takes.
    const goFile = join(dirname(ledger.path), 'go')
    const startedAt = Date.now()
    try {
      for (let p = 0; p < PROCESSES; p++) {
        const schedule: { i: number; delayMs: number }[] = []
        for (let i = p; i < EVENTS; i += PROCESSES) schedule.push({ i, delayMs: Math.round(Math.random() * SPREAD_MS) })
        fixtures.push(
          startFixture({ mode: 'schedule', redisUrl: server.url, topic, ledger: ledger.path, schedule, goFile, manager: { delayedQueueCheckInterval: 1_000 } }),
        )
      }
      // Generous bounds: they cover process start and scheduling on a loaded machine, and assert nothing about speed.
      await waitFor(() => readLedger(ledger.path).filter((l) => l.k === 'ready').length === PROCESSES, 60_000, 'every process connected')
      const goAt = Date.now()
      writeFileSync(goFile, '')
      await waitFor(() => readLedger(ledger.path).filter((l) => l.k === 'scheduled').length === PROCESSES, 60_000, 'every process scheduled')
      await waitFor(async () => (await redis.xlen(streamKey(topic))) >= EVENTS, SPREAD_MS + 30_000, 'every event promoted')
      await sleep(300) // a duplicate promotion would show up now
      expect(await redis.zcard(`event:delayed:{${topic}}`)).toBe(0)
      expect(await redis.hlen(`event:delayed-data:{${topic}}`)).toBe(0)
      const entries = await redis.xrange(streamKey(topic), '-', '+')
      expect(entries).toHaveLength(EVENTS)
      // Events due before their process finished storing them are late by the scheduling itself: reported apart.
      const storedBy = Math.max(...readLedger(ledger.path).filter((l) => l.k === 'scheduled').map((l) => l.t))
      const seen = new Set<number>()
      const lateness: number[] = []
      const promoterLateness: number[] = []
      for (const [id, fields] of entries) {
        const payload = JSON.parse(fields[fields.indexOf('payload') + 1] as string) as { i: number; dueAt: number }
        seen.add(payload.i)
        lateness.push(idMs(id) - payload.dueAt)
        if (payload.dueAt > storedBy) promoterLateness.push(idMs(id) - payload.dueAt)
      }
      expect(seen.size).toBe(EVENTS) // each exactly once
      expect(Math.min(...lateness)).toBeGreaterThanOrEqual(0) // none before its due time
      const lastReady = Math.max(...readLedger(ledger.path).filter((l) => l.k === 'ready').map((l) => l.t))
      console.log(
        `[delayed] processes connected ${lastReady - startedAt} ms after spawn; stored ${storedBy - goAt} ms after go. ` +
          `${EVENTS} events, ${PROCESSES} promoters: lateness p50 ${percentile(lateness, 50)} ms, p99 ${percentile(lateness, 99)} ms, max ${Math.max(...lateness)} ms; ` +
          `for the ${promoterLateness.length} due after all were stored: p50 ${percentile(promoterLateness, 50)} ms, p99 ${percentile(promoterLateness, 99)} ms`,
      )
    } finally {
      await Promise.all(fixtures.map((f) => f.stop()))
      await redis.quit()
      ledger.cleanup()
    }
  }, 240_000)
})
