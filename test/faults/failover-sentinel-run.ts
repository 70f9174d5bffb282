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
import { entryEventId } from '../support/entries.js'

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
  failures: { id: string; at: number; message: string; name: string }[]
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
        run.failures.push({ id: event.id, at: started, message: (error as Error).message, name: (error as Error).name })
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
  redis.on('error', () => undefined) // a killed node: the read rejects, that is enough
  try {
    const entries = await redis.xrange(key, '-', '+')
    const ids = new Set<string>()
    for (const [, fields] of entries) {
      const id = entryEventId(fields)
      if (id !== '') ids.add(id)
    }
    return ids
  } finally {
    redis.disconnect()
  }
}

/** How one failover run goes (see {@link scenario}). */
export interface ScenarioOptions {
  /** WAIT this many replicas after each publish (0: off). */
  readonly waitReplicas?: number
  /** How long to keep publishing after the switch (after the SIGCONT for `sigstop`). Default 3 s. */
  readonly settleMs?: number
  /** Then keep publishing until one is acknowledged again, for up to this long. Default 0. */
  readonly resumeWithinMs?: number
}

/** What a run measured. */
export interface ScenarioResult {
  readonly missing: number
  readonly resumed: boolean
  readonly switchedAt: number
  /** The event ids on the master at the end (the one the sentinels name then). */
  readonly onNew: ReadonlySet<string>
  readonly run: Run
}

/** Runs one failover while publishing (WAIT `waitReplicas` when > 0); prints the numbers, asserts generously. */
export async function scenario(kind: 'failover' | 'sigkill' | 'sigstop', options: ScenarioOptions = {}): Promise<ScenarioResult> {
  const { waitReplicas = 0, settleMs = 3_000, resumeWithinMs = 0 } = options
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
  // The master the sentinels name now: on a loaded machine they may fail over a second time (down-after 1 s) while
  // the run settles, and publishing follows that switch too (one CI run: 46491 -> 35465 -> 37595).
  const sentinels = group
  const masterNow = async (): Promise<number> => (await sentinels.currentMaster()).port
  const resumedOn = async (): Promise<boolean> => {
    const on = await idsOn(await masterNow(), key)
    return loop.run.acknowledged.some((a) => a.at > switchedAt && on.has(a.id))
  }
  const resumeDeadline = Date.now() + resumeWithinMs
  while (Date.now() < resumeDeadline && !(await resumedOn())) await sleep(200)
  await loop.stop()
  const { run } = loop
  const onNew = await idsOn(await masterNow(), key)
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
    failedButOnNewMaster: run.failures.filter((f) => onNew.has(f.id)).length,
    // Where the acknowledged publishes are, per node (old master first; null: not reachable), and the master at the end.
    acknowledgedOn: Object.fromEntries(
      await Promise.all(
        group.servers.map(async (s) => [String(s.port), await idsOn(s.port, key).then((ids) => run.acknowledged.filter((a) => ids.has(a.id)).length, () => null)] as const),
      ),
    ),
    masters: [old.port, next.port, (await group.currentMaster()).port],
    errorKinds: [...new Set(run.failures.map((f) => f.message.replace(/[0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{16}|\d{4,}/g, '#').slice(0, 160)))],
  }
  console.log(`[failover-sentinel] ${JSON.stringify(report)}`)
  expect(resumedAt).toBeDefined()
  for (const f of run.failures) expect(f.message).not.toMatch(/MOVED|READONLY|EXECABORT/)
  const health = await events.health()
  expect(health.redis.reachable).toBe(true)
  return { missing: missing.length, resumed: resumedAt !== undefined, switchedAt, onNew, run }
}

