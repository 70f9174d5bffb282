/**
 * Adversarial: coalesced retry-safe publishes across a Sentinel failover.
 * Waves of concurrent publish() calls (coalesced per topic) run while the
 * sentinels switch the master (SENTINEL FAILOVER); every caller that fails
 * gets a typed error and retries the same event until it succeeds. At the
 * end the new master holds every event exactly once, even after the old
 * master rejoined as a replica: no acknowledged write was left on it (EVENT_PUBLISH_WAIT_REPLICAS=1: without WAIT the README
 * documents the loss of what the old master took in the last second).
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BackendError, createEventManager, newEvent, type Event } from '../../src/index.js'
import { startSentinelGroup, type SentinelGroup } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { entryEventId } from '../support/entries.js'

let group: SentinelGroup

beforeAll(async () => {
  group = await startSentinelGroup({ replicas: 1, sentinels: 3 })
}, 90_000)

afterAll(async () => {
  await group.stop()
})

describe('coalesced publish across a Sentinel failover', () => {
  it('waves of concurrent publishes while the master switches: every event once on the new master, every failure a typed error', async () => {
    const events = createEventManager({
      env: { EVENT_REDIS_HOSTS: group.hosts, EVENT_REDIS_MASTER_NAME: group.masterName },
      delayedQueueEnabled: false,
      commandTimeout: 3_000,
      // WAIT on every replica: what the old master accepts after the promoted replica left it is refused, not lost
      publishWaitReplicas: 1,
      publishWaitTimeout: 500,
    })
    const topics = Array.from({ length: 4 }, (_, i) => randomName(`adv-sen-${i}`))
    const all: { topic: string; event: Event }[] = []
    const untyped: unknown[] = []
    let retries = 0
    const publishUntilDone = async (topic: string, event: Event): Promise<void> => {
      const deadline = Date.now() + 40_000
      for (;;) {
        try {
          await events.publish(topic, event)
          return
        } catch (error) {
          if (!(error instanceof BackendError)) untyped.push(error)
          if (Date.now() > deadline) throw error
          retries++
          await new Promise((r) => setTimeout(r, 50))
        }
      }
    }
    try {
      const old = await group.currentMaster()
      const waves: Promise<void>[] = []
      let switched: Promise<unknown> | undefined
      let namedAtWave = -1
      let namedAt = 0
      let currentWave = 0
      for (let wave = 0; wave < 40; wave++) {
        for (let i = 0; i < 50; i++) {
          const topic = topics[i % 4] ?? ''
          const event = newEvent('w', { wave, i })
          all.push({ topic, event })
          waves.push(publishUntilDone(topic, event))
        }
        if (wave === 5) {
          switched = group.failover().then(async () => {
            const m = await group.waitForNewMaster(old.port, 30_000)
            namedAtWave = currentWave
            namedAt = Date.now()
            return m
          })
        }
        currentWave = wave
        await new Promise((r) => setTimeout(r, 50))
      }
      await switched
      await Promise.all(waves)
      const now = await group.currentMaster()
      expect(now.port).not.toBe(old.port)
      const master = new Redis(now.port, now.host)
      const former = new Redis(old.port, old.host)
      try {
        const t0 = Date.now()
        while (!(await former.info('replication')).includes('role:slave') && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 200))
        await new Promise((r) => setTimeout(r, 1_000))
        console.log(`[adversarial-sentinel] the sentinels named the new master at wave ${namedAtWave}; the old one became a replica ${Date.now() - namedAt} ms later`)
        for (const topic of topics) {
          const entries = await master.xrange(`event:stream:{${topic}}`, '-', '+')
          const ids = entries.map(([, f]) => entryEventId(f))
          const expected = all.filter((x) => x.topic === topic).map((x) => x.event.id)
          expect(ids.length).toBe(new Set(ids).size)
          expect([...ids].sort()).toEqual([...expected].sort())
        }
      } finally {
        master.disconnect()
        former.disconnect()
      }
      expect(untyped).toEqual([])
      console.log(`[adversarial-sentinel] ${all.length} events, ${retries} retries across the switch ${old.port} -> ${now.port}`)
    } finally {
      await events.close()
    }
  }, 120_000)
})
