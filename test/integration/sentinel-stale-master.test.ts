/**
 * A dead branch under Sentinel, made deterministic: the sentinel is told
 * that another node is the master (SENTINEL REMOVE + MONITOR, which
 * announces no +switch-master, like a switch the failover detector missed)
 * while the node the library writes to still acts as master. The library
 * must notice without a round trip per publish (a periodic
 * `SENTINEL get-master-addr-by-name`), move its connections, and say so in
 * `health()`; a node demoted under it (READONLY) makes it reconnect through
 * the sentinels, and the refused publishes are retried, never surfacing.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createEventManager, newEvent, type EventManager } from '../../src/index.js'
import { setSentinelCheckInterval } from '../../src/backend/redis/connection.js'
import { freePort, startRedisServer, waitForRedis, type RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { sleep, waitFor } from '../support/events.js'
import { entryEventId } from '../support/entries.js'

const MASTER = 'rrs-stale'

describe('Sentinel: a node that still acts as master after the sentinels named another', () => {
  let a: RedisServer
  let b: RedisServer
  let sentinel: ChildProcess
  let sentinelPort: number
  let dir: string
  let events: EventManager | undefined

  const onSentinel = async <T,>(fn: (s: Redis) => Promise<T>): Promise<T> => {
    const s = new Redis(sentinelPort, '127.0.0.1', { maxRetriesPerRequest: 1 })
    try {
      return await fn(s)
    } finally {
      s.disconnect()
    }
  }
  /** The sentinel now names `server` as the master (no failover, no +switch-master). */
  const nameMaster = (server: RedisServer): Promise<void> =>
    onSentinel(async (s) => {
      await s.call('SENTINEL', 'REMOVE', MASTER)
      await s.call('SENTINEL', 'MONITOR', MASTER, server.host, server.port, 1)
      await s.call('SENTINEL', 'SET', MASTER, 'down-after-milliseconds', 60_000)
    })
  const idsOn = async (server: RedisServer, topic: string): Promise<Set<string>> => {
    const node = new Redis(server.port, server.host, { maxRetriesPerRequest: 1 })
    try {
      const entries = await node.xrange(`event:stream:{${topic}}`, '-', '+')
      return new Set(entries.map(([, fields]) => entryEventId(fields)))
    } finally {
      node.disconnect()
    }
  }
  const manager = (): EventManager => {
    events = createEventManager({ env: { EVENT_REDIS_HOSTS: `127.0.0.1:${sentinelPort}`, EVENT_REDIS_MASTER_NAME: MASTER }, commandTimeout: 5_000, healthTimeout: 2_000 })
    return events
  }

  beforeEach(async () => {
    a = await startRedisServer()
    b = await startRedisServer()
    sentinelPort = await freePort()
    dir = mkdtempSync(join(tmpdir(), 'rrs-stale-'))
    const conf = join(dir, 'sentinel.conf')
    writeFileSync(conf, [`port ${sentinelPort}`, 'bind 127.0.0.1', `dir ${dir}`, `sentinel monitor ${MASTER} 127.0.0.1 ${a.port} 1`, `sentinel down-after-milliseconds ${MASTER} 60000`, ''].join('\n'))
    sentinel = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' })
    await waitForRedis(sentinelPort)
  }, 30_000)

  afterEach(async () => {
    await events?.close()
    events = undefined
    sentinel.kill('SIGKILL')
    await Promise.all([a.stop(), b.stop()])
    rmSync(dir, { recursive: true, force: true })
  })

  it('health() says the connected node is not the master the sentinels name; its connections move and publishes go to the named master', async () => {
    const previous = setSentinelCheckInterval(3_600_000) // only health() checks in this test
    try {
      const m = manager()
      const topic = randomName('stale')
      const first = newEvent('e', 1)
      await m.publish(topic, first)
      expect((await m.health()).ok).toBe(true)
      expect(await idsOn(a, topic)).toEqual(new Set([first.id]))

      await nameMaster(b)
      const report = await m.health()
      expect(report.ok).toBe(false)
      expect(report.reasons.join('\n')).toContain(`127.0.0.1:${a.port} still acts as master, but the sentinels name 127.0.0.1:${b.port} as the master of ${MASTER}`)
      expect(report.reasons.join('\n')).not.toMatch(/unreachable/)

      // The check moved the connections: the next publish goes to the named master, nothing more to the old one.
      const second = newEvent('e', 2)
      await m.publish(topic, second)
      expect(await idsOn(b, topic)).toEqual(new Set([second.id]))
      expect(await idsOn(a, topic)).toEqual(new Set([first.id]))
      await waitFor(async () => (await m.health()).ok, 5_000, 'health ok on the named master')
    } finally {
      setSentinelCheckInterval(previous)
    }
  })

  it('without any health() call, publishing moves to the named master within a few seconds (periodic check); no publish fails', async () => {
    const m = manager()
    const topic = randomName('stale')
    const acknowledged: { id: string; at: number }[] = []
    const failures: string[] = []
    const state = { stopped: false }
    const loop = (async () => {
      while (!state.stopped) {
        const event = newEvent('tick', {})
        try {
          await m.publish(topic, event)
          acknowledged.push({ id: event.id, at: Date.now() })
        } catch (error) {
          failures.push((error as Error).message)
        }
        await sleep(10)
      }
    })()
    await sleep(300)
    const switchedAt = Date.now()
    await nameMaster(b)
    let movedAt: number | undefined
    const deadline = Date.now() + 15_000
    while (movedAt === undefined && Date.now() < deadline) {
      await sleep(50)
      const onB = await idsOn(b, topic)
      movedAt = acknowledged.find((x) => onB.has(x.id))?.at
    }
    await sleep(300)
    state.stopped = true
    await loop
    const onA = await idsOn(a, topic)
    const onB = await idsOn(b, topic)
    const deadBranch = acknowledged.filter((x) => x.at > switchedAt && !onB.has(x.id) && onA.has(x.id)).length
    const afterMove = acknowledged.filter((x) => movedAt !== undefined && x.at > movedAt && !onB.has(x.id)).length
    console.log(`[sentinel-stale-master] ${JSON.stringify({ acknowledged: acknowledged.length, failed: failures.length, moveAfterSwitchMs: movedAt === undefined ? null : movedAt - switchedAt, acknowledgedOnTheOldMasterAfterTheSwitch: deadBranch, missingAfterTheMove: afterMove })}`)
    expect(movedAt).toBeDefined() // generous bound: the check runs every second
    expect(afterMove).toBe(0)
    expect(failures).toEqual([])
  }, 30_000)

  it('a node demoted under the library (READONLY) makes it reconnect through the sentinels: the refused publishes are retried, none fails', async () => {
    const previous = setSentinelCheckInterval(3_600_000) // READONLY alone moves it here, not the periodic check
    try {
      const m = manager()
      const topic = randomName('stale')
      await m.publish(topic, newEvent('warm', 0))
      const acknowledged: { id: string; at: number }[] = []
      const failures: string[] = []
      const state = { stopped: false }
      const loop = (async () => {
        while (!state.stopped) {
          const event = newEvent('tick', {})
          try {
            await m.publish(topic, event)
            acknowledged.push({ id: event.id, at: Date.now() })
          } catch (error) {
            failures.push((error as Error).message)
          }
          await sleep(10)
        }
      })()
      await sleep(300)
      // A becomes a replica of B (its writes refused with READONLY); the sentinel names B half a second later.
      const demoted = new Redis(a.port, a.host)
      await demoted.ping() // connected first: on a loaded machine the connection alone can take longer than the 50 ms margin below
      const demotedAt = Date.now()
      try {
        await demoted.call('REPLICAOF', b.host, String(b.port))
      } finally {
        demoted.disconnect()
      }
      await sleep(500)
      await nameMaster(b)
      await sleep(1_500)
      state.stopped = true
      await loop
      const onB = await idsOn(b, topic)
      const after = acknowledged.filter((x) => x.at > demotedAt + 50)
      console.log(`[sentinel-stale-master] ${JSON.stringify({ readonly: true, acknowledged: acknowledged.length, afterDemotion: after.length, failed: failures.length, missingOnB: after.filter((x) => !onB.has(x.id)).length })}`)
      expect(failures).toEqual([])
      expect(after.length).toBeGreaterThan(0)
      expect(after.filter((x) => !onB.has(x.id))).toEqual([])
    } finally {
      setSentinelCheckInterval(previous)
    }
  }, 30_000)
})
