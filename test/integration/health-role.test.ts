/**
 * health() checks ROLE: a node that answers PING but is not a master (a
 * replica given as the address, a failover not followed yet) is not healthy.
 * And WAIT after publishing (EVENT_PUBLISH_WAIT_REPLICAS).
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { newEvent, ReplicationTimeoutError } from '../../src/index.js'
import { randomName } from '../support/redis.js'
import { startRedisServer, waitForReplicaSync, type RedisServer } from '../support/redis-server.js'
import { testEvents } from '../support/events.js'

describe('health() and ROLE', () => {
  let master: RedisServer
  let replica: RedisServer
  beforeAll(async () => {
    // No diskless-sync delay (5 s by default, longer than WAIT 1's timeout below): the replica syncs at once.
    master = await startRedisServer({ extraArgs: ['--repl-diskless-sync-delay', '0'] })
    replica = await startRedisServer({ extraArgs: ['--replicaof', master.host, String(master.port)] })
    // The replica has synced before WAIT is asked of it (WAIT 2 below expects exactly 1 acknowledgement).
    await waitForReplicaSync(replica.port)
  })
  afterAll(async () => {
    await replica.stop()
    await master.stop()
  })

  it('a replica is reachable but not ok: the reason says it is not a master', async () => {
    const events = testEvents({ redisUrl: replica.url })
    const report = await events.health()
    expect(report.ok).toBe(false)
    expect(report.reasons.join('\n')).toMatch(new RegExp(`127\\.0\\.0\\.1:${replica.port} is not a master \\(ROLE slave\\)`))
    expect(report.reasons.join('\n')).not.toMatch(/unreachable/)
  })

  it('the master is ok', async () => {
    const events = testEvents({ redisUrl: master.url })
    expect((await events.health()).ok).toBe(true)
  })

  it('WAIT 1 with one replica: the publish resolves once the replica has it', async () => {
    const events = testEvents({ redisUrl: master.url, publishWaitReplicas: 1, publishWaitTimeout: '5s' })
    const topic = randomName('wait')
    await events.publish(topic, newEvent('e', { n: 1 }))
    await events.publishBatch(topic, [newEvent('e', { n: 2 }), newEvent('e', { n: 3 })])
    const onReplica = new Redis(replica.port, replica.host)
    try {
      // WAIT returned: the replica has all three already, no polling needed.
      expect(await onReplica.xlen(`event:stream:{${topic}}`)).toBe(3)
    } finally {
      onReplica.disconnect()
    }
  })

  it('WAIT 2 with one replica: a ReplicationTimeoutError after the timeout, and the event is on the master', async () => {
    const events = testEvents({ redisUrl: master.url, publishWaitReplicas: 2, publishWaitTimeout: '200ms' })
    const topic = randomName('wait')
    let error: unknown
    try {
      await events.publish(topic, newEvent('e', {}))
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(ReplicationTimeoutError)
    expect(error).toMatchObject({ wanted: 2, acknowledged: 1, timeoutMs: 200 })
    const onMaster = new Redis(master.port, master.host)
    try {
      expect(await onMaster.xlen(`event:stream:{${topic}}`)).toBe(1)
    } finally {
      onMaster.disconnect()
    }
  })
})
