/**
 * Cluster failover (3 masters + 3 replicas, the harness's own servers): kill a
 * master while publishing to topics spread over every slot range, then restart
 * it (it rejoins as a replica). MOVED, READONLY, EXECABORT, CLUSTERDOWN and
 * TRYAGAIN are retried inside the library within the command timeout and never
 * reach the caller. Resume time and losses are printed for the report.
 */
import { Cluster, Redis } from 'ioredis'
import { afterEach, describe, expect, it } from 'vitest'
import { createEventManager, newEvent, type EventManager } from '../../src/index.js'
import { startRedisCluster, type RedisCluster } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { sleep } from '../support/events.js'

let cluster: RedisCluster | undefined
let events: EventManager | undefined
afterEach(async () => {
  await events?.close()
  events = undefined
  await cluster?.stop()
  cluster = undefined
})

const TOPOLOGY = /MOVED|ASK |READONLY|EXECABORT|CLUSTERDOWN|TRYAGAIN/

/** Every replica's link is up and it has caught up with its master's offset. */
async function waitForReplicasInSync(c: RedisCluster): Promise<void> {
  const deadline = Date.now() + 20_000
  for (const server of c.servers) {
    const node = new Redis(server.port, server.host)
    try {
      for (;;) {
        const info = await node.info('replication')
        if (info.includes('role:master')) break
        const up = info.includes('master_link_status:up') && !info.includes('master_sync_in_progress:1')
        if (up) break
        if (Date.now() > deadline) throw new Error(`replica ${server.port} not in sync:\n${info}`)
        await sleep(50)
      }
    } finally {
      node.disconnect()
    }
  }
  await sleep(200)
}

describe('Cluster failover', () => {
  it('killing a master: publishes, delayed publishes and stats() never see MOVED/READONLY/EXECABORT; publishing resumes', async () => {
    cluster = await startRedisCluster({ masters: 3, replicas: 1 })
    const hosts = cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',')
    events = createEventManager({ env: { EVENT_REDIS_HOSTS: hosts }, commandTimeout: 5_000, delayedQueueEnabled: false })
    const manager = events
    const topics = Array.from({ length: 12 }, () => randomName('cf'))
    for (const topic of topics) await manager.publish(topic, newEvent('warm', {}))
    // Replicas that are still in their first full sync would lose what the master buffered for them.
    await waitForReplicasInSync(cluster)

    const acknowledged: { topic: string; id: string; at: number }[] = []
    const failures: { at: number; message: string }[] = []
    const state = { stopped: false }
    const loop = (async () => {
      for (let i = 0; !state.stopped; i++) {
        const topic = topics[i % topics.length] as string
        const event = newEvent('tick', { i })
        try {
          if (i % 10 === 5) await manager.publishWithDelay(topic, event, 60_000)
          else if (i % 25 === 7) await manager.stats(topic)
          else {
            await manager.publish(topic, event)
            acknowledged.push({ topic, id: event.id, at: Date.now() })
          }
        } catch (error) {
          failures.push({ at: Date.now(), message: (error as Error).message })
        }
        await sleep(5)
      }
    })()

    await sleep(500)
    const victim = cluster.servers[0]
    if (victim === undefined) throw new Error('no node')
    const killedAt = Date.now()
    await victim.kill()
    await sleep(9_000)
    await victim.restart() // it comes back as a replica of its promoted replica
    await sleep(4_000)
    state.stopped = true
    await loop

    // Every acknowledged publish is in its stream (read through a fresh client).
    const reader = new Cluster(cluster.nodes.map((n) => ({ host: n.host, port: n.port })))
    let missing = 0
    const missingAt: number[] = []
    try {
      for (const topic of topics) {
        const entries = await reader.xrange(`event:stream:{${topic}}`, '-', '+')
        const ids = new Set(entries.map(([, fields]) => fields[fields.indexOf('id') + 1]))
        const lost = acknowledged.filter((a) => a.topic === topic && !ids.has(a.id))
        missing += lost.length
        missingAt.push(...lost.map((a) => a.at - killedAt))
      }
    } finally {
      reader.disconnect()
    }
    const gapStart = failures.find((f) => f.at >= killedAt)?.at
    const lastFailure = failures.at(-1)?.at
    const resumedAt = acknowledged.find((a) => a.at > (lastFailure ?? killedAt))?.at
    console.log(
      `[failover-cluster] ${JSON.stringify({
        acknowledged: acknowledged.length,
        failed: failures.length,
        missing,
        missingAckedMsAfterKill: missingAt.sort((a, b) => a - b),
        firstFailureAfterKillMs: gapStart === undefined ? null : gapStart - killedAt,
        resumedAfterKillMs: resumedAt === undefined ? null : resumedAt - killedAt,
        errors: [...new Set(failures.map((f) => f.message.replace(/\d{3,}|[0-9a-f]{16}/g, '#').slice(0, 160)))],
      })}`,
    )
    for (const f of failures) expect(f.message).not.toMatch(TOPOLOGY)
    expect(resumedAt).toBeDefined()
  }, 60_000)
})
