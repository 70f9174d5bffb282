/**
 * NOSCRIPT never reaches a caller (issue #15, seen once where a Cluster master
 * was killed mid-sync: the promoted replica had not cached the scripts). Every
 * script the library runs is sent as EVALSHA once a connection has sent it;
 * here `SCRIPT FLUSH` empties the nodes' script caches again and again while
 * every script path runs: publish (retry-safe append), publishBatch without
 * dedupe (the batch append), handler failures (redeliver, dead-letter), DLQ
 * replay, lease renewal, give-back on unsubscribe, delayed promotion and the
 * idle-consumer cleanup on close. On a Cluster the topic's slot also moves
 * between masters, so that ioredis re-sends whole autopipelines (where its
 * own NOSCRIPT fallback is lost).
 */
import type { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEventManager, newEvent, type EventManager, type Message } from '../../src/index.js'
import { handleEach } from '../../operators/index.js'
import { startRedisCluster, startRedisServer, type RedisCluster, type RedisServer } from '../support/redis-server.js'
import { keySlot, masters, moveSlot, nodeClient, ownerOf } from '../support/cluster-slots.js'
import { randomName } from '../support/redis.js'
import { sleep, waitFor } from '../support/events.js'
import { capturingLogger } from '../support/logger.js'

const NOSCRIPT = /NOSCRIPT/

interface Outcome {
  readonly failures: string[]
  readonly consumerErrors: string[]
  readonly logged: string[]
  readonly flushes: number
}

/**
 * Runs every script path on `events` while `disturb` runs (flushing script
 * caches, moving slots) until the work is done.
 */
async function exercise(events: EventManager, plain: EventManager, topic: string, disturb: (state: { stopped: boolean }) => Promise<number>, lines: string[]): Promise<Outcome> {
  const group = randomName('g')
  const failures: string[] = []
  const consumerErrors: string[] = []
  const attempt = async <T>(what: string, run: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await run()
    } catch (error) {
      failures.push(`${what}: ${(error as Error).name}: ${(error as Error).message}`)
      return undefined
    }
  }
  const handled = new Set<string>()
  const seenBad = new Map<string, number>()
  const main = events
    .topic(topic)
    .consume({ group, startFrom: 'beginning', blockMs: 50, claimMinIdleTime: 300, claimInterval: 100, consumerTimeout: 2_000 })
    .pipe(
      handleEach(
        async (m: Message) => {
          if (m.event.name === 'bad') {
            seenBad.set(m.event.id, (seenBad.get(m.event.id) ?? 0) + 1)
            throw new Error('bad event')
          }
          if (m.event.name === 'slow') await sleep(700) // held past claimMinIdleTime: its lease is renewed
          handled.add(m.event.id)
        },
        { concurrency: 8, retry: { maxRetries: 1, initialDelay: 10 } },
      ),
    )
    .subscribe({ error: (error: unknown) => consumerErrors.push(String(error)) })

  const state = { stopped: false }
  const disturbing = disturb(state)
  const expected: string[] = []
  const bad: string[] = []
  try {
    for (let round = 0; round < 12; round++) {
      const one = newEvent(round % 4 === 0 ? 'slow' : 'ok', { round })
      if ((await attempt('publish', () => events.publish(topic, one))) !== undefined) expected.push(one.id)
      const batch = [newEvent('ok', { round, n: 1 }), newEvent('ok', { round, n: 2 })]
      if ((await attempt('publishBatch', () => plain.publishBatch(topic, batch))) !== undefined) expected.push(...batch.map((e) => e.id))
      const later = newEvent('ok', { round, later: true })
      if ((await attempt('publishWithDelay', () => events.publishWithDelay(topic, later, 50))) !== undefined) expected.push(later.id)
      if (round % 3 === 0) {
        const failing = newEvent('bad', { round })
        if ((await attempt('publish', () => events.publish(topic, failing))) !== undefined) bad.push(failing.id)
      }
      // A second consumer that prefetches and leaves at once: what it did not start is given back.
      if (round % 4 === 1) {
        const side = events
          .topic(topic)
          .consume({ group, consumer: randomName('side'), blockMs: 50, batchSize: 20 })
          .pipe(handleEach(async (m: Message) => {
            await sleep(200)
            handled.add(m.event.id)
          }, { concurrency: 1 }))
          .subscribe({ error: (error: unknown) => consumerErrors.push(`side: ${String(error)}`) })
        await sleep(120)
        side.unsubscribe()
      }
      await sleep(40)
    }
    await waitFor(async () => (await events.deadLetters.count(topic)) >= bad.length, 20_000, 'the bad events dead-lettered')
    for (const letter of (await attempt('list', () => events.deadLetters.list(topic))) ?? []) {
      await attempt('replay', () => events.deadLetters.replay(topic, letter.dlqId))
    }
    await waitFor(() => expected.every((id) => handled.has(id)), 30_000, 'every published event handled')
    await waitFor(async () => (await events.deadLetters.count(topic)) >= bad.length, 20_000, 'the replayed bad events dead-lettered again')
  } finally {
    state.stopped = true
    main.unsubscribe()
  }
  const flushes = await disturbing
  return { failures, consumerErrors, logged: lines.filter((l) => NOSCRIPT.test(l)), flushes }
}

/** How many NOSCRIPT replies the nodes sent (`INFO errorstats`): the fallback was exercised. */
async function noScriptReplies(nodes: readonly Redis[]): Promise<number> {
  let total = 0
  for (const node of nodes) total += Number(/errorstat_NOSCRIPT:count=(\d+)/.exec(await node.info('errorstats'))?.[1] ?? 0)
  return total
}

/** SCRIPT FLUSH on every node every `everyMs` until stopped; resolves with the number of flushes. */
async function flushing(nodes: readonly Redis[], state: { stopped: boolean }, everyMs: number): Promise<number> {
  let flushes = 0
  while (!state.stopped) {
    await Promise.all(nodes.map((n) => n.call('SCRIPT', 'FLUSH').catch(() => undefined)))
    flushes++
    await sleep(everyMs)
  }
  return flushes
}

describe('NOSCRIPT never reaches a caller', () => {
  describe('standalone', () => {
    let server: RedisServer
    beforeAll(async () => {
      server = await startRedisServer()
    })
    afterAll(async () => {
      await server.stop()
    })

    it('script caches flushed every 25 ms: publish, batch, dead-letter, replay, leases, give-back, promote', async () => {
      const { logger, lines } = capturingLogger()
      const events = createEventManager({ env: { EVENT_REDIS_URL: server.url }, delayedQueueCheckInterval: 50, logger })
      const plain = createEventManager({ env: { EVENT_REDIS_URL: server.url, EVENT_PUBLISH_DEDUPE_WINDOW: '0ms' }, delayedQueueEnabled: false, logger })
      const admin = nodeClient(server.port)
      try {
        const outcome = await exercise(events, plain, randomName('ns'), (state) => flushing([admin], state, 25), lines)
        const replies = await noScriptReplies([admin])
        console.log(`[noscript standalone] ${JSON.stringify({ flushes: outcome.flushes, noScriptReplies: replies, failures: outcome.failures.slice(0, 5), logged: outcome.logged.slice(0, 2) })}`)
        expect(outcome.flushes).toBeGreaterThan(20)
        expect(replies).toBeGreaterThan(0)
        expect(outcome.failures).toEqual([])
        expect(outcome.consumerErrors).toEqual([])
        expect(outcome.logged).toEqual([])
      } finally {
        await events.close()
        await plain.close()
        admin.disconnect()
      }
    }, 80_000)
  })

  describe('Cluster', () => {
    let cluster: RedisCluster
    beforeAll(async () => {
      cluster = await startRedisCluster({ masters: 3 })
    }, 40_000)
    afterAll(async () => {
      await cluster.stop()
    })

    it('script caches flushed while the topic slot moves between masters: no NOSCRIPT anywhere', async () => {
      const { logger, lines } = capturingLogger()
      const admins = cluster.nodes.map((n) => nodeClient(n.port))
      const admin = admins[0] as Redis
      const events = createEventManager({
        env: { EVENT_REDIS_HOSTS: cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',') },
        delayedQueueCheckInterval: 50,
        commandTimeout: 8_000,
        logger,
      })
      const plain = createEventManager({
        env: { EVENT_REDIS_HOSTS: cluster.nodes.map((n) => `${n.host}:${n.port}`).join(','), EVENT_PUBLISH_DEDUPE_WINDOW: '0ms' },
        delayedQueueEnabled: false,
        commandTimeout: 8_000,
        logger,
      })
      try {
        const [a, b] = await masters(admin)
        if (a === undefined || b === undefined) throw new Error('need two masters')
        const topic = randomName('ns')
        const movedSlot = await keySlot(admin, `event:stream:{${topic}}`)
        const outcome = await exercise(
          events,
          plain,
          topic,
          async (state) => {
            const flushes = flushing(admins, state, 40)
            while (!state.stopped) {
              const owner = await ownerOf(admin, movedSlot)
              await moveSlot(cluster, movedSlot, owner.port === a.port ? b.port : a.port, { pauseMs: 100 })
              await sleep(300)
            }
            return flushes
          },
          lines,
        )
        const replies = await noScriptReplies(admins)
        console.log(`[noscript cluster] ${JSON.stringify({ flushes: outcome.flushes, noScriptReplies: replies, movedSlot, failures: outcome.failures.slice(0, 5), logged: outcome.logged.slice(0, 2) })}`)
        expect(outcome.flushes).toBeGreaterThan(20)
        expect(replies).toBeGreaterThan(0)
        expect(outcome.failures).toEqual([])
        expect(outcome.consumerErrors).toEqual([])
        expect(outcome.logged).toEqual([])
      } finally {
        await events.close()
        await plain.close()
        for (const c of admins) c.disconnect()
      }
    }, 80_000)
  })
})
