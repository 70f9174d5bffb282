/**
 * The scenario runner of the Sentinel failover tests, with the harness's own servers (1 master, 2 replicas, 3
 * sentinels): graceful SENTINEL FAILOVER, SIGKILL of the master, SIGSTOP of
 * the master. Publishing must move to the new master (ioredis' failover
 * detector follows +switch-master) and resume; the numbers are printed for
 * the report, the assertions are generous.
 */
import { Redis } from 'ioredis'
import { afterEach, expect } from 'vitest'
import { createEventManager, newEvent, type EventManager } from '../../src/index.js'
import { startSentinelGroup, type SentinelGroup } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { sleep } from '../support/events.js'

let group: SentinelGroup | undefined
let events: EventManager | undefined
afterEach(async () => {
  await events?.close()
  events = undefined
  await group?.stop()
  group = undefined
})

interface Run {
  acknowledged: { id: string; at: number }[]
  failures: { at: number; message: string }[]
}

/** Publishes one event every `everyMs` until `stop()`; records what was acknowledged and what failed. */
function publishLoop(manager: EventManager, topic: string, everyMs: number): { run: Run; stop: () => Promise<void> } {
  const run: Run = { acknowledged: [], failures: [] }
  const state = { stopped: false }
  const loop = (async () => {
    for (let i = 0; !state.stopped; i++) {
      const event = newEvent('tick', { i })
      const started = Date.now()
      try {
        await manager.publish(topic, event)
        run.acknowledged.push({ id: event.id, at: Date.now() })
      } catch (error) {
        run.failures.push({ at: started, message: (error as Error).message })
      }
      await sleep(everyMs)
    }
  })()
  return {
    run,
    stop: async () => {
      state.stopped = true
      await loop
    },
  }
}

/** Event ids in the topic's stream on `port`. */
async function idsOn(port: number, key: string): Promise<Set<string>> {
  const redis = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: 1 })
  try {
    const entries = await redis.xrange(key, '-', '+')
    const ids = new Set<string>()
    for (const [, fields] of entries) {
      const at = fields.indexOf('id')
      if (at >= 0 && fields[at + 1] !== undefined) ids.add(fields[at + 1] as string)
    }
    return ids
  } finally {
    redis.disconnect()
  }
}

/** Runs one failover while publishing (WAIT `waitReplicas` when > 0); prints the numbers, asserts generously. */
export async function scenario(kind: 'failover' | 'sigkill' | 'sigstop', waitReplicas = 0, settleMs = 3_000, expectResume = true): Promise<{ missing: number; resumed: boolean }> {
  group = await startSentinelGroup({ replicas: 2, sentinels: 3, downAfterMs: 1_000, failoverTimeoutMs: 5_000 })
  const topic = randomName(`fo-${kind}`)
  events = createEventManager({ env: { EVENT_REDIS_HOSTS: group.hosts, EVENT_REDIS_MASTER_NAME: group.masterName }, commandTimeout: 2_000, healthTimeout: 1_000, publishWaitReplicas: waitReplicas, publishWaitTimeout: 500 })
  const key = `event:stream:{${topic}}`
  const old = await group.currentMaster()
  const loop = publishLoop(events, topic, 10)
  await sleep(500)
  const triggeredAt = Date.now()
  if (kind === 'failover') await group.failover()
  else if (kind === 'sigkill') await group.server(old.port).kill()
  else group.server(old.port).pause()
  const next = await group.waitForNewMaster(old.port, 30_000)
  const switchedAt = Date.now()
  if (kind === 'sigstop') {
    // A 10 s freeze in all: the old master wakes up as a stale master and is demoted.
    await sleep(Math.max(0, 10_000 - (Date.now() - triggeredAt)))
    group.server(old.port).resume()
  }
  await sleep(settleMs)
  await loop.stop()
  const { run } = loop
  const onNew = await idsOn(next.port, key)
  const missing = run.acknowledged.filter((a) => !onNew.has(a.id))
  const afterTrigger = run.acknowledged.filter((a) => a.at > switchedAt && onNew.has(a.id))
  const resumedAt = afterTrigger[0]?.at
  const report = {
    kind,
    waitReplicas,
    acknowledged: run.acknowledged.length,
    failed: run.failures.length,
    missingOnNewMaster: missing.length,
    switchMs: switchedAt - triggeredAt,
    resumeAfterSwitchMs: resumedAt === undefined ? null : resumedAt - switchedAt,
    resumeAfterTriggerMs: resumedAt === undefined ? null : resumedAt - triggeredAt,
    errorKinds: [...new Set(run.failures.map((f) => f.message.replace(/[0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{16}|\d{4,}/g, '#').slice(0, 160)))],
  }
  console.log(`[failover-sentinel] ${JSON.stringify(report)}`)
  if (expectResume) expect(resumedAt).toBeDefined()
  for (const f of run.failures) expect(f.message).not.toMatch(/MOVED|READONLY|EXECABORT/)
  const health = await events.health()
  expect(health.redis.reachable).toBe(true)
  return { missing: missing.length, resumed: resumedAt !== undefined }
}

