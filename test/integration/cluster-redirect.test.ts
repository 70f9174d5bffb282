/**
 * Cluster redirections forced deterministically (issue #15 item 11): a topic's
 * slot is moved between masters again and again (IMPORTING/MIGRATING, MIGRATE
 * of its keys, SETSLOT NODE) while publish(), publishWithDelay(),
 * publishBatch() and stats() run concurrently, autopipelined with commands
 * for topics that stay where they are, and a consumer reads the moving topic.
 * The client meets ASK and TRYAGAIN while the slot migrates and MOVED once it
 * moved; a mixed autopipeline (one command MOVED, the others answered) is not
 * redirected by ioredis, a MULTI is discarded with EXECABORT. None of those
 * replies may reach a caller, the consumer or the logger: the library retries
 * them within the command timeout.
 *
 * This test fails with the library's topology retry disabled (see
 * `boundCall` in src/backend/redis/connection.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEventManager, newEvent, type EventManager, type Message } from '../../src/index.js'
import { handleEach } from '../../operators/index.js'
import { startRedisCluster, type RedisCluster } from '../support/redis-server.js'
import { findName, keySlot, masters, moveSlot, nodeClient, ownerOf } from '../support/cluster-slots.js'
import { randomName } from '../support/redis.js'
import { sleep, waitFor } from '../support/events.js'
import { capturingLogger } from '../support/logger.js'

const TOPOLOGY = /MOVED|ASK\b|READONLY|EXECABORT|CLUSTERDOWN|TRYAGAIN|NOSCRIPT/

let cluster: RedisCluster
beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3 })
}, 40_000)
afterAll(async () => {
  await cluster.stop()
})

describe('Cluster redirections while a slot moves', () => {
  it('ASK, TRYAGAIN, MOVED and EXECABORT windows never reach publish(), publishWithDelay(), publishBatch(), stats(), a consumer or the log', async () => {
    const admin = nodeClient(cluster.nodes[0]!.port)
    const { logger, lines } = capturingLogger()
    let events: EventManager | undefined
    try {
      const [a, b] = await masters(admin)
      if (a === undefined || b === undefined) throw new Error('need two masters')
      const onNode = (port: number) => async (topic: string) => (await ownerOf(admin, await keySlot(admin, `event:stream:{${topic}}`))).port === port
      // `moving` and `staying` start on master a; `elsewhere` lives on b. The slot of `moving` goes a → b → a → ...
      const moving = await findName(() => randomName('cr-move'), onNode(a.port))
      const staying = await findName(() => randomName('cr-stay'), onNode(a.port))
      const elsewhere = await findName(() => randomName('cr-else'), onNode(b.port))
      const slot = await keySlot(admin, `event:stream:{${moving}}`)

      events = createEventManager({
        env: { EVENT_REDIS_HOSTS: cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',') },
        commandTimeout: 8_000,
        delayedQueueEnabled: false,
        logger,
      })
      const manager = events
      const group = randomName('g')
      const handled = new Set<string>()
      const consumerErrors: string[] = []
      const sub = manager
        .topic(moving)
        .consume({ group, startFrom: 'beginning', blockMs: 100 })
        .pipe(handleEach((m: Message) => void handled.add(m.event.id)))
        .subscribe({ error: (error: unknown) => consumerErrors.push(String(error)) })
      for (const topic of [moving, staying, elsewhere]) await manager.publish(topic, newEvent('warm', {}))

      const acknowledged: string[] = []
      const failures: string[] = []
      const counts = { publish: 0, delayed: 0, batch: 0, stats: 0 }
      const state = { stopped: false }
      const worker = async (w: number): Promise<void> => {
        for (let i = 0; !state.stopped; i++) {
          const topic = i % 3 === 2 ? (w % 2 === 0 ? staying : elsewhere) : moving
          try {
            switch ((i + w) % 6) {
              case 0:
                await manager.publishWithDelay(topic, newEvent('later', { w, i }), 600_000)
                counts.delayed++
                break
              case 1: {
                const batch = [newEvent('b', { w, i }), newEvent('b', { w, i, n: 2 })]
                await manager.publishBatch(topic, batch)
                if (topic === moving) acknowledged.push(...batch.map((e) => e.id))
                counts.batch++
                break
              }
              case 2:
                await manager.stats(topic)
                counts.stats++
                break
              default: {
                const event = newEvent('tick', { w, i })
                await manager.publish(topic, event)
                if (topic === moving) acknowledged.push(event.id)
                counts.publish++
              }
            }
          } catch (error) {
            failures.push(`${(error as Error).name}: ${(error as Error).message}`)
          }
        }
      }
      // Eight workers: several commands per tick, so the autopipeline to a mixes the moving slot with the staying one.
      const workers = Array.from({ length: 8 }, (_, w) => worker(w))

      const moves: number[] = []
      for (let round = 0; round < 6; round++) {
        await sleep(150)
        const started = Date.now()
        await moveSlot(cluster, slot, round % 2 === 0 ? b.port : a.port, { pauseMs: 150 })
        moves.push(Date.now() - started)
      }
      await sleep(300)
      state.stopped = true
      await Promise.all(workers)
      await waitFor(() => acknowledged.every((id) => handled.has(id)), 20_000, 'every acknowledged publish of the moving topic handled')
      sub.unsubscribe()

      const logged = lines.filter((l) => TOPOLOGY.test(l))
      console.log(
        `[cluster-redirect] ${JSON.stringify({ ...counts, acknowledgedMoving: acknowledged.length, handled: handled.size, failures: failures.length, moveMs: moves, errors: [...new Set(failures.map((f) => f.slice(0, 160)))].slice(0, 5), logged: logged.slice(0, 3).map((l) => l.slice(0, 300)) })}`,
      )
      expect(failures).toEqual([])
      expect(consumerErrors).toEqual([])
      expect(logged).toEqual([])
      // The windows were met: every kind of call ran while the slot moved.
      expect(counts.publish).toBeGreaterThan(50)
      expect(counts.delayed).toBeGreaterThan(10)
      expect(counts.batch).toBeGreaterThan(10)
      expect(counts.stats).toBeGreaterThan(10)
    } finally {
      await events?.close()
      admin.disconnect()
    }
  }, 80_000)
})
