/**
 * Issue 14: the pull loop overlaps its reads with delivery. When a read of new
 * entries comes back full and the credit left has room for a batch, the next
 * read-ahead round (a packed script call, not blocking) is sent BEFORE the
 * entries just read are delivered, so that Redis reads it while they are
 * handled. On a private redis-server, through a holding proxy that can hold
 * that round's reply (the round has run in Redis: its entries are pending to
 * this consumer with a delivery counted):
 * - the round is on the wire before the first entry of the read before it is emitted;
 * - a stop in the middle of a batch, with the round held, gives every entry of
 *   the round back at its old count (none stranded fresh in the closed consumer);
 * - a round whose connection is cut loses nothing and runs nothing acked again
 *   (its entries are re-read from this consumer's pending list).
 */
import { Redis } from 'ioredis'
import { describe, expect, it, onTestFinished } from 'vitest'
import { RedisBackend } from '../../src/backend/redis/redis-backend.js'
import { CONSUMER_READER_CLIENT_SETTINGS, createEventManager, newEvent, type Message } from '../../src/index.js'
import type { RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { sleep, waitFor } from '../support/events.js'
import { isPackedCall, withHoldingServer, type HoldingProxy } from '../support/holding-proxy.js'

const CLAIM_MIN_IDLE_MS = 30_000

let server: RedisServer
let direct: Redis
let proxy: HoldingProxy
withHoldingServer((s) => ({ server, direct, proxy } = s))

type Pending = [id: string, consumer: string, idleMs: number, deliveries: number][]

async function backlog(topic: string, n: number): Promise<string[]> {
  const publisher = createEventManager({ redisUrl: server.url, env: {}, delayedQueueEnabled: false })
  try {
    return await publisher.publishBatch(topic, Array.from({ length: n }, (_, i) => newEvent('n', { i })))
  } finally {
    await publisher.close()
  }
}

describe('read-ahead overlapped with delivery (Redis)', () => {
  it('after a full read, the next round is sent before the first entry of that read is emitted', async () => {
    const topic = randomName('overlap-order')
    const group = randomName('g')
    await backlog(topic, 1_000)
    const log: string[] = []
    const backend = new RedisBackend({
      client: new Redis(server.url, { maxRetriesPerRequest: 3, enableAutoPipelining: true }),
      createBlockingClient: () => {
        // The reader's real connection; its commands are recorded in the order they are sent.
        const client = new Redis(server.url, { ...CONSUMER_READER_CLIENT_SETTINGS })
        const send = client.sendCommand.bind(client)
        client.sendCommand = (command, stream) => {
          log.push(`send ${command.name}`)
          return send(command, stream)
        }
        return client
      },
      keyPrefix: 'event:',
      ownsClient: true,
    })
    const events = createEventManager({ backend, env: {}, delayedQueueEnabled: false, claimInterval: 0 })
    onTestFinished(() => events.close())
    let acked = 0
    events
      .topic(topic)
      .consume({ group, batchSize: 100, maxPendingMessages: 1_000 })
      .subscribe((m: Message) => {
        log.push('emit')
        void m.ack().then(() => acked++)
      })
    await waitFor(() => acked === 1_000, 20_000, 'the backlog acked')
    const firstRead = log.findIndex((l) => /^send xreadgroup$/i.test(l))
    const firstRound = log.findIndex((l) => /^send eval(sha)?$/i.test(l))
    const firstEmit = log.indexOf('emit')
    expect(firstRead).toBeGreaterThanOrEqual(0)
    // read 100 (full) → the round goes out → then the 100 are emitted.
    expect(firstRound).toBeGreaterThan(firstRead)
    expect(firstRound).toBeLessThan(firstEmit)
    expect(log.slice(firstRound + 1, firstRound + 101)).toEqual(Array<string>(100).fill('emit'))
  }, 60_000)

  it('a stop in the middle of a batch while the round sent ahead is held in the proxy: every entry of the round goes back at its old count', async () => {
    const topic = randomName('overlap-close')
    const group = randomName('g')
    const ids = await backlog(topic, 1_000)
    const events = createEventManager({ redisUrl: proxy.url(), env: {}, delayedQueueEnabled: false, claimInterval: 0, claimMinIdleTime: CLAIM_MIN_IDLE_MS })
    proxy.hold(isPackedCall)
    const seen: string[] = []
    let closing: Promise<void> | undefined
    events
      .topic(topic)
      .consume({ group, batchSize: 100, maxPendingMessages: 1_000 })
      .subscribe((m: Message) => {
        seen.push(m.streamId)
        if (m.begin()) void m.ack()
        // A stop in the middle of the first read's 100, the round sent before them in flight.
        if (seen.length === 50) closing = events.close()
      })
    await waitFor(() => closing !== undefined, 20_000, 'the 50th message')
    // The round has run in Redis: its reply is held in the proxy while the stop waits for it.
    await waitFor(() => proxy.held() > 0, 10_000, 'the round answered (and held)')
    const heldAtStop = proxy.held()
    let closed = false
    void closing?.then(() => (closed = true))
    await sleep(200)
    expect(closed).toBe(false)
    // Then the late reply arrives.
    proxy.release()
    await closing
    expect(heldAtStop).toBeGreaterThan(0)
    expect(seen).toEqual(ids.slice(0, 50))
    const left = (await direct.xpending(`event:stream:{${topic}}`, group, '-', '+', 2_000)) as Pending
    // The 50 not emitted of the first read and the 4 × 100 of the round: given back (idle claimMinIdleTime: claimable
    // at once), no delivery counted; none of the 50 handled is pending.
    expect(left.map(([id]) => id)).toEqual(ids.slice(50, 500))
    expect(left.filter(([, , idle]) => idle < CLAIM_MIN_IDLE_MS)).toEqual([])
    expect(left.filter(([, , , count]) => count !== 0)).toEqual([])
  }, 60_000)

  it('the connection of a round sent ahead is cut before its reply: nothing lost, nothing acked handled again', async () => {
    const topic = randomName('overlap-cut')
    const group = randomName('g')
    const ids = await backlog(topic, 2_000)
    const events = createEventManager({ redisUrl: proxy.url(), env: {}, delayedQueueEnabled: false, claimInterval: 0, claimMinIdleTime: CLAIM_MIN_IDLE_MS })
    onTestFinished(() => events.close())
    proxy.hold(isPackedCall)
    const runs = new Map<string, number[]>()
    let acked = 0
    events
      .topic(topic)
      .consume({ group, batchSize: 100, maxPendingMessages: 1_000 })
      .subscribe((m: Message) => {
        runs.set(m.streamId, [...(runs.get(m.streamId) ?? []), m.deliveryCount])
        if (m.begin()) void m.ack().then((o) => o === 'acked' && acked++)
      })
    await waitFor(() => proxy.held() > 0, 20_000, 'the round answered (and held)')
    // The first read's 100 are handled while the round's reply is held.
    await waitFor(() => acked === 100, 10_000, 'the first read acked')
    proxy.cut(0)
    await waitFor(() => acked === 2_000, 30_000, 'the whole backlog acked')
    expect([...runs.keys()].sort()).toEqual([...ids].sort())
    // Each entry handled once: the round's entries came back by the re-read of own pending entries (count 2).
    expect([...runs.values()].filter((counts) => counts.length !== 1)).toEqual([])
    const recounted = [...runs.values()].filter(([count]) => count === 2).length
    expect(recounted).toBeGreaterThan(0)
    expect(recounted).toBeLessThanOrEqual(400)
    await waitFor(async () => ((await direct.xpending(`event:stream:{${topic}}`, group, '-', '+', 10)) as Pending).length === 0, 10_000, 'nothing pending')
  }, 60_000)
})
