import { Cluster } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEventManager, newEvent, type EventManager, type Message } from '../../src/index.js'
import { handleEach } from '../../operators/index.js'
import { startRedisCluster, type RedisCluster } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { waitFor } from '../support/events.js'

describe('on a 3-master Redis Cluster', () => {
  let cluster: RedisCluster
  let events: EventManager

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 })
    const hosts = cluster.nodes.map((n) => `${n.host}:${n.port}`)
    events = createEventManager({ redisHosts: hosts, env: {}, retryBackoff: 10, maxRetries: 1, delayedQueueCheckInterval: 50 })
  }, 30_000)

  afterAll(async () => {
    await events.close()
    await cluster.stop()
  })

  it('a retry-safe publish (a script with a variable key count) never shares an autopipeline with a command for another node', async () => {
    // ioredis files an autopipelined script call under the slot of its first argument; for appendOnce that is the key
    // count (2 for one event), not a key. Sent with a command for the node owning slot("2"), it made a pipeline whose
    // keys live on two nodes, which ioredis rejected before sending: "All keys in the pipeline should belong to the
    // same slots allocation group".
    const client = new Cluster(cluster.nodes.map((n) => ({ host: n.host, port: n.port })), { enableAutoPipelining: true })
    const manager = createEventManager({ redisClient: client, env: {} })
    try {
      const nodeOf = async (key: string): Promise<string | undefined> => client.slots[Number(await client.call('CLUSTER', 'KEYSLOT', key))]?.[0]
      const countNode = await nodeOf('2')
      expect(countNode).toEqual(expect.any(String))
      let topic = randomName('cl-once')
      while ((await nodeOf(`event:stream:{${topic}}`)) === countNode) topic = randomName('cl-once')
      let other = randomName('k')
      while ((await nodeOf(other)) !== countNode) other = randomName('k')
      await manager.publish(topic, newEvent('first', 0)) // the topic is registered: the batch below is the script alone
      for (let round = 0; round < 20; round++) {
        const [ids] = await Promise.all([manager.publishBatch(topic, [newEvent('once', round)]), client.get(other), Promise.resolve().then(() => client.get(other))])
        expect(ids).toHaveLength(1)
      }
      expect(await client.xlen(`event:stream:{${topic}}`)).toBe(21)
    } finally {
      await manager.close()
      client.disconnect()
    }
  })

  it('publishes, consumes, dead-letters, replays and promotes delayed events on topics spread over the slots', async () => {
    expect(events.config.redis.mode).toBe('cluster')
    const topics = Array.from({ length: 6 }, () => randomName('cl'))
    const group = randomName('g')
    const seen = new Map<string, string[]>()
    const subs = topics.map((topic) =>
      events
        .topic(topic)
        .consume({ group, blockMs: 200 })
        .pipe(
          handleEach((m: Message) => {
            seen.set(topic, [...(seen.get(topic) ?? []), m.event.name])
            if (m.event.name === 'bad' && m.deliveryCount === 1 && !(seen.get(topic) ?? []).includes('replayed')) throw new Error('fails once')
          }),
        )
        .subscribe(),
    )
    for (const topic of topics) {
      await events.publishBatch(topic, [newEvent('a', 1), newEvent('b', 2), newEvent('bad', 3)])
      await events.publishWithDelay(topic, newEvent('later', 4), 100)
    }
    await waitFor(async () => {
      const counts = await Promise.all(topics.map((t) => events.deadLetters.count(t)))
      return counts.every((c) => c === 1) && topics.every((t) => seen.get(t)?.includes('later') === true)
    }, 15_000, 'dead letters and delayed events on every topic')
    for (const topic of topics) {
      const [letter] = await events.deadLetters.list(topic)
      expect(letter?.group).toBe(group)
      seen.set(topic, [...(seen.get(topic) ?? []), 'replayed'])
      expect(await events.deadLetters.replay(topic, letter!.dlqId)).not.toBeNull()
    }
    await waitFor(() => topics.every((t) => (seen.get(t) ?? []).filter((n) => n === 'bad').length >= 3), 15_000, 'replays handled')
    const stats = await events.stats()
    for (const topic of topics) expect(Object.keys(stats.topics)).toContain(topic)
    subs.forEach((s) => s.unsubscribe())
  })
})
