/**
 * The blocking reader takes the engine's CONSUMER_READER_CLIENT_SETTINGS: a
 * read cut by a reconnect fails instead of being re-sent (a re-sent
 * `XREADGROUP >` whose first run delivered entries would hide them in this
 * consumer's pending list), and the engine then re-reads only after the last
 * id it saw, so nothing it holds is counted twice (README, "Across reconnects").
 * Through the fault proxy, in front of a private redis-server.
 */
import { Redis } from 'ioredis'
import { describe, expect, it } from 'vitest'
import { newEvent, type Message } from '../../src/index.js'
import type { FaultProxy } from '../support/fault-proxy.js'
import { randomName } from '../support/redis.js'
import { sleep, testEvents, waitFor } from '../support/events.js'
import { withProxiedServer } from '../support/proxied-server.js'

let proxy: FaultProxy
let direct: Redis
withProxiedServer((s) => ({ proxy, direct } = s))

/** Whether some client is blocked in XREADGROUP on the server. */
async function blockedRead(): Promise<boolean> {
  const list = (await direct.call('CLIENT', 'LIST')) as string
  return list.split('\n').some((line) => line.includes('cmd=xreadgroup') && /flags=\S*b/.test(line))
}

async function pendingCounts(topic: string, group: string): Promise<Map<string, number>> {
  const rows = (await direct.xpending(`event:stream:{${topic}}`, group, '-', '+', 100)) as [string, string, number, number][]
  return new Map(rows.map(([id, , , count]) => [id, count]))
}

describe('a blocked read cut by a reconnect', () => {
  it('rejects instead of being re-sent on the new connection', async () => {
    const events = testEvents({ redisUrl: proxy.url })
    const topic = randomName('cut-read')
    const group = randomName('g')
    await events.backend.ensureGroup(topic, group, 'beginning')
    const reader = events.backend.createReader()
    const read = reader.read(topic, group, 'c1', { count: 10, blockMs: 20_000, from: 'new' })
    await waitFor(blockedRead, 5_000, 'the read to block')
    proxy.resetAll()
    // Re-sent, it would block again for 20 s on the new connection and then answer [].
    const outcome = await Promise.race([
      read.then(
        () => 'answered',
        (error: unknown) => error,
      ),
      sleep(8_000).then(() => 'still waiting'),
    ])
    expect(outcome).toBeInstanceOf(Error)
    expect((outcome as Error).message).toMatch(/in flight|connection/i)
    await reader.close()
  })

  it('a consumer keeps going after the reset, and what it holds is not counted again', async () => {
    const events = testEvents({ redisUrl: proxy.url })
    const topic = randomName('cut-consume')
    const group = randomName('g')
    const [a] = await events.publishBatch(topic, [newEvent('a', 1)])
    const seen: Message[] = []
    events
      .topic(topic)
      .consume({ group, consumer: 'c1', blockMs: 5_000, claimInterval: 0, drainTimeout: 50 })
      .subscribe((m) => seen.push(m))
    await waitFor(() => seen.length === 1, 10_000, 'a')
    await waitFor(blockedRead, 10_000, 'the next read to block')
    proxy.resetAll()
    await waitFor(async () => !(await blockedRead()), 10_000, 'the cut read to end')
    const b = await direct.xadd(`event:stream:{${topic}}`, '*', 'id', 'b-1', 'name', 'b', 'ts', String(Date.now()), 'headers', '{}', 'payload', '2')
    await waitFor(() => seen.length === 2, 15_000, 'b after the reset')
    expect(seen.map((m) => [m.streamId, m.deliveryCount])).toEqual([
      [a, 1],
      [b, 1],
    ])
    // a, held all along, was not re-read: still one delivery in Redis.
    expect(await pendingCounts(topic, group)).toEqual(
      new Map([
        [a!, 1],
        [b!, 1],
      ]),
    )
    await Promise.all(seen.map((m) => m.ack()))
  })
})
