/**
 * EVENT_PUBLISH_WAIT_REPLICAS in a Redis Cluster (3 masters + 3 replicas, the
 * harness's own servers): WAIT counts only the writes of its own connection,
 * so the append and its WAIT go in one pipeline to the node that holds the
 * topic's slot. A publish to a topic on each master succeeds and is on that
 * master's replica when it resolves; a frozen replica makes only its
 * master's topics wait (WAIT ran on the topic's node, not on a random one).
 */
import { Cluster, Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEventManager, newEvent, ReplicationTimeoutError, type EventManager } from '../../src/index.js'
import { startRedisCluster, type RedisCluster, type RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { keySlot, moveSlot, nodeClient } from '../support/cluster-slots.js'
import { sleep } from '../support/events.js'
import { entryEventId } from '../support/entries.js'

const streamKey = (topic: string): string => `event:stream:{${topic}}`

describe('WAIT on a 3-master + 3-replica Redis Cluster', () => {
  let cluster: RedisCluster
  let inspect: Cluster
  /** One topic per master, with that master's and its replica's server. */
  let placed: { topic: string; master: RedisServer; replica: RedisServer }[]
  const managers: EventManager[] = []
  const manager = (env: Record<string, string>, options: { publishDedupeWindow?: number } = {}): EventManager => {
    const m = createEventManager({ redisHosts: cluster.nodes.map((n) => `${n.host}:${n.port}`), env: { EVENT_COMMAND_TIMEOUT: '5s', ...env }, ...options })
    managers.push(m)
    return m
  }

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicas: 1 })
    inspect = new Cluster(cluster.nodes.map((n) => ({ host: n.host, port: n.port })))
    // The replicas have synced (WAIT 1 can be met) before the tests start.
    for (const server of cluster.servers) {
      const node = new Redis(server.port, server.host)
      try {
        for (let i = 0; ; i++) {
          const info = await node.info('replication')
          if (info.includes('role:master') ? /connected_slaves:1/.test(info) : info.includes('master_link_status:up')) break
          if (i > 300) throw new Error(`node ${server.port} did not finish replication setup:\n${info}`)
          await new Promise((r) => setTimeout(r, 50))
        }
      } finally {
        node.disconnect()
      }
    }
    await inspect.ping()
    const byPort = (address: string | undefined): RedisServer => {
      const server = cluster.servers.find((s) => `${s.host}:${s.port}` === address)
      if (server === undefined) throw new Error(`no server at ${String(address)}`)
      return server
    }
    // CLUSTER NODES: `<id> <host:port@bus> <flags> <master id or -> ...`; each replica names its master's id.
    const addressOf = (fields: string[]): string => (fields[1] ?? '').split('@')[0] ?? ''
    const replicaOf = new Map<string, string>()
    // The node asked may not have heard of every replica yet (cluster gossip): asked again until it names three.
    for (let attempt = 0; replicaOf.size < 3; attempt++) {
      if (attempt > 300) throw new Error('CLUSTER NODES never named a replica for every master')
      if (attempt > 0) await new Promise((r) => setTimeout(r, 50))
      const lines = String(await inspect.call('CLUSTER', 'NODES')).trim().split('\n').map((l) => l.split(' '))
      replicaOf.clear()
      for (const fields of lines) {
        const master = lines.find((m) => m[0] === fields[3])
        if (fields[2]?.includes('slave') === true && master !== undefined) replicaOf.set(addressOf(master), addressOf(fields))
      }
    }
    const found = new Map<string, { topic: string; master: RedisServer; replica: RedisServer }>()
    for (let i = 0; found.size < 3; i++) {
      if (i > 1_000) throw new Error('could not place a topic on every master')
      const topic = randomName('cl-wait')
      const master = inspect.slots[Number(await inspect.call('CLUSTER', 'KEYSLOT', streamKey(topic)))]?.[0]
      const replica = master === undefined ? undefined : replicaOf.get(master)
      if (master === undefined || replica === undefined || found.has(master)) continue
      found.set(master, { topic, master: byPort(master), replica: byPort(replica) })
    }
    placed = [...found.values()]
  }, 60_000)

  afterAll(async () => {
    await Promise.all(managers.map((m) => m.close()))
    inspect.disconnect()
    await cluster.stop()
  })

  /** Entries of a topic's stream on one node (a replica answers reads of its own data with READONLY set). */
  const lengthOn = async (server: RedisServer, topic: string): Promise<number> => {
    const node = new Redis(server.port, server.host, { maxRetriesPerRequest: 1 })
    try {
      await node.call('READONLY')
      return await node.xlen(streamKey(topic))
    } finally {
      node.disconnect()
    }
  }

  it('WAIT 1: a publish to a topic on each master succeeds, and that master\'s replica has it when it resolves', async () => {
    const retrySafe = manager({ EVENT_PUBLISH_WAIT_REPLICAS: '1', EVENT_PUBLISH_WAIT_TIMEOUT: '2s' })
    const plain = manager({ EVENT_PUBLISH_WAIT_REPLICAS: '1', EVENT_PUBLISH_WAIT_TIMEOUT: '2s' }, { publishDedupeWindow: 0 })
    expect(retrySafe.config.redis.mode).toBe('cluster')
    for (const { topic, replica } of placed) {
      await retrySafe.publish(topic, newEvent('once', 1)) // the retry-safe script (first use on the node: EVALSHA, then EVAL)
      await retrySafe.publishBatch(topic, [newEvent('once', 2), newEvent('once', 3)])
      await plain.publish(topic, newEvent('plain', 4)) // dedupe off: the plain append
      await plain.publishBatch(topic, [newEvent('plain', 5), newEvent('plain', 6)])
      // WAIT returned: the replica has all six already, no polling.
      expect(await lengthOn(replica, topic)).toBe(6)
    }
  }, 60_000)

  it('WAIT runs on the topic\'s node: with one master\'s replica frozen, only that master\'s topic times out (the event is appended)', async () => {
    const events = manager({ EVENT_PUBLISH_WAIT_REPLICAS: '1', EVENT_PUBLISH_WAIT_TIMEOUT: '300ms' })
    const [frozen, ...others] = placed as [(typeof placed)[number], ...typeof placed]
    for (const { topic } of placed) await events.publish(topic, newEvent('warm', 0))
    const before = await lengthOn(frozen.master, frozen.topic)
    frozen.replica.pause()
    try {
      let error: unknown
      try {
        await events.publish(frozen.topic, newEvent('frozen', 1))
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(ReplicationTimeoutError)
      expect(error).toMatchObject({ wanted: 1, acknowledged: 0, timeoutMs: 300 })
      // Had WAIT gone to any other node, it would have been met there: the other masters' replicas are live.
      for (const { topic } of others) await expect(events.publish(topic, newEvent('live', 1))).resolves.toEqual(expect.any(String))
    } finally {
      frozen.replica.resume()
    }
    expect(await lengthOn(frozen.master, frozen.topic)).toBe(before + 1)
  }, 60_000)

  it('WAIT 1 while the topic\'s slot moves between masters (ASK, TRYAGAIN, MOVED on the append): no redirection reaches a caller, every publish acknowledged is on its final master\'s replica', async () => {
    const events = manager({ EVENT_PUBLISH_WAIT_REPLICAS: '1', EVENT_PUBLISH_WAIT_TIMEOUT: '2s', EVENT_COMMAND_TIMEOUT: '8s' })
    const [home, away] = placed as [(typeof placed)[number], (typeof placed)[number]]
    const topic = home.topic
    const admin = nodeClient(home.master.port)
    const acknowledged: string[] = []
    const failures: string[] = []
    const state = { stopped: false }
    const publishing = (batch: boolean) =>
      (async () => {
        for (let i = 0; !state.stopped; i++) {
          const group = batch ? [newEvent('moving', i), newEvent('moving', i)] : [newEvent('moving', i)]
          try {
            if (batch) await events.publishBatch(topic, group)
            else await events.publish(topic, group[0] as ReturnType<typeof newEvent>)
            acknowledged.push(...group.map((e) => e.id))
          } catch (error) {
            failures.push((error as Error).message)
          }
          await sleep(5)
        }
      })()
    try {
      const slot = await keySlot(admin, streamKey(topic))
      const loops = [publishing(false), publishing(true)]
      for (let round = 0; round < 4; round++) {
        await sleep(150)
        await moveSlot(cluster, slot, round % 2 === 0 ? away.master.port : home.master.port, { pauseMs: 150 })
      }
      await sleep(150)
      state.stopped = true
      await Promise.all(loops)
    } finally {
      state.stopped = true
      admin.disconnect()
    }
    console.log(`[cluster-wait] slot moved 4 times under WAIT 1: ${JSON.stringify({ acknowledged: acknowledged.length, failed: failures.length })}`)
    expect(failures).toEqual([])
    expect(acknowledged.length).toBeGreaterThan(0)
    // Back on `home`: its replica has every acknowledged event (WAIT 1 was met on the master that took each).
    const node = new Redis(home.replica.port, home.replica.host, { maxRetriesPerRequest: 1 })
    try {
      await node.call('READONLY')
      const ids = new Set((await node.xrange(streamKey(topic), '-', '+')).map(([, fields]) => entryEventId(fields)))
      expect(acknowledged.filter((id) => !ids.has(id))).toEqual([])
    } finally {
      node.disconnect()
    }
  }, 60_000)

  it('WAIT 2 with one replica per master: ReplicationTimeoutError per publish, each event appended on its master', async () => {
    const events = manager({ EVENT_PUBLISH_WAIT_REPLICAS: '2', EVENT_PUBLISH_WAIT_TIMEOUT: '200ms' })
    for (const { topic, master } of placed) {
      const before = await lengthOn(master, topic)
      await expect(events.publish(topic, newEvent('e', 1))).rejects.toMatchObject({ name: 'ReplicationTimeoutError', wanted: 2, acknowledged: 1 })
      expect(await lengthOn(master, topic)).toBe(before + 1)
    }
  }, 60_000)
  // Last: it kills a master of the shared cluster.
  it('WAIT 1 through the kill of a master: its replica is promoted, publishes reject (appended, not replicated) until the old master rejoins as its replica, none acknowledged is missing', async () => {
    const events = manager({ EVENT_PUBLISH_WAIT_REPLICAS: '1', EVENT_PUBLISH_WAIT_TIMEOUT: '500ms', EVENT_COMMAND_TIMEOUT: '5s' })
    const victim = placed[0] as (typeof placed)[number]
    const acknowledged: { id: string; at: number }[] = []
    const failures: { at: number; name: string; message: string }[] = []
    const state = { stopped: false }
    const loop = (async () => {
      while (!state.stopped) {
        const event = newEvent('kill', {})
        const started = Date.now()
        try {
          await events.publish(victim.topic, event)
          acknowledged.push({ id: event.id, at: Date.now() })
        } catch (error) {
          failures.push({ at: started, name: (error as Error).name, message: (error as Error).message })
        }
        await sleep(10)
      }
    })()
    const roleOf = async (server: RedisServer): Promise<string> => {
      const node = new Redis(server.port, server.host, { maxRetriesPerRequest: 1 })
      node.on('error', () => undefined)
      try {
        return /role:(\w+)/.exec(await node.info('replication'))?.[1] ?? 'unknown'
      } catch {
        return 'unreachable'
      } finally {
        node.disconnect()
      }
    }
    const times = { killedAt: 0 }
    let promotedAt = 0
    let resumedAt: number | undefined
    try {
      await sleep(500)
      times.killedAt = Date.now()
      await victim.master.kill()
      for (let i = 0; (await roleOf(victim.replica)) !== 'master'; i++) {
        if (i > 400) throw new Error('the replica was not promoted')
        await sleep(50)
      }
      promotedAt = Date.now()
      await victim.master.restart() // rejoins as the promoted node's replica, then syncs
      const deadline = Date.now() + 40_000
      while (resumedAt === undefined && Date.now() < deadline) {
        await sleep(100)
        resumedAt = acknowledged.find((a) => a.at > promotedAt)?.at
      }
      await sleep(300)
    } finally {
      state.stopped = true
      await loop
    }
    const onPromoted = new Redis(victim.replica.port, victim.replica.host, { maxRetriesPerRequest: 1 })
    let missing: number
    try {
      const ids = new Set((await onPromoted.xrange(streamKey(victim.topic), '-', '+')).map(([, fields]) => entryEventId(fields)))
      missing = acknowledged.filter((a) => !ids.has(a.id)).length
    } finally {
      onPromoted.disconnect()
    }
    const kinds = [...new Set(failures.map((f) => f.name))]
    console.log(`[cluster-wait] kill with WAIT 1: ${JSON.stringify({ acknowledged: acknowledged.length, failed: failures.length, missing, promotedAfterKillMs: promotedAt - times.killedAt, resumedAfterPromotionMs: resumedAt === undefined ? null : resumedAt - promotedAt, errorKinds: kinds })}`)
    expect(missing).toBe(0)
    expect(resumedAt).toBeDefined()
    for (const f of failures) expect(f.message).not.toMatch(/MOVED|ASK\b|READONLY|EXECABORT|CLUSTERDOWN|TRYAGAIN|NOSCRIPT/)
    for (const f of failures.filter((x) => x.at > promotedAt + 1_000)) expect(f.name).toBe('ReplicationTimeoutError')
  }, 80_000)
})
