/**
 * Adversarial tests of pipelined read-ahead (issue #10) on a private
 * redis-server and the memory backend: a consumer that stops after one
 * message (firstValueFrom) or is closed while rounds are in flight, a
 * connection reset again and again while rounds flow, and a slow handler at
 * maxPendingMessages 5. Each event must end handled once (or over by one
 * after a cut connection), nothing lost, nothing dead-lettered, delivery
 * counts of given-back entries unchanged, and the credit never exceeded.
 */
import { Redis } from 'ioredis'
import { firstValueFrom, lastValueFrom, take, toArray } from 'rxjs'
import { afterEach, describe, expect, it } from 'vitest'
import { handleEach, windowTumbling, type Window } from '../../operators/index.js'
import { createEventManager, newEvent, type EventManager, type EventManagerOptions, type Message } from '../../src/index.js'
import type { FaultProxy } from '../support/fault-proxy.js'
import { recording, sum, type ReadCall } from '../support/read-calls.js'
import type { RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { sleep, waitFor } from '../support/events.js'
import { withProxiedServer } from '../support/proxied-server.js'
import { publishMany } from '../support/contract.js'

let server: RedisServer
let proxy: FaultProxy
let direct: Redis
withProxiedServer((s) => ({ server, proxy, direct } = s))

const open: EventManager[] = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((m) => m.close()))
})

function manager(options: EventManagerOptions = {}): EventManager {
  const m = createEventManager({ env: {}, delayedQueueEnabled: false, ...options })
  open.push(m)
  return m
}

const backends = [
  ['redis', (): EventManagerOptions => ({ redisUrl: server.url })],
  ['memory', (): EventManagerOptions => ({ backend: 'memory' })],
] as const

describe.each(backends)('read-ahead, adversarial (%s)', (kind, options) => {
  it('firstValueFrom mid-round: one message taken, the rest of the round given back with its count unchanged; a second consumer gets every other entry once', async () => {
    const events = manager(options())
    const topic = randomName('adv-first')
    const group = randomName('g')
    const ids = await publishMany(events, topic, 1_000)
    // warm up read-ahead: a first full read, then rounds
    const first = await firstValueFrom(events.topic(topic).consume({ group, startFrom: 'beginning', batchSize: 10, claimInterval: 0 }))
    expect(first.streamId).toBe(ids[0])
    await first.ack()
    const second = await firstValueFrom(events.topic(topic).consume({ group, batchSize: 10, claimInterval: 0 }))
    expect(second.deliveryCount).toBe(1)
    await second.ack()
    const seen = new Map<string, number>()
    const counts: number[] = []
    const sub = events
      .topic(topic)
      .consume({ group, batchSize: 10, claimInterval: 100, claimMinIdleTime: 60_000 })
      .pipe(
        handleEach((m) => {
          seen.set(m.streamId, (seen.get(m.streamId) ?? 0) + 1)
          counts.push(m.deliveryCount)
        }, { concurrency: 20 }),
      )
      .subscribe()
    // given-back entries are idle at once: claimed long before claimMinIdleTime
    await waitFor(() => seen.size === 998, 20_000, `998 entries (${kind})`).catch((e: unknown) => {
      throw new Error(`${String(e)}; got ${seen.size}`)
    })
    sub.unsubscribe()
    expect([...seen.values()].every((n) => n === 1)).toBe(true)
    expect([first.streamId, second.streamId, ...seen.keys()].sort()).toEqual([...ids].sort())
    // given back: each entry seen on its first delivery (given-back entries keep their counts)
    expect(Math.max(...counts)).toBe(1)
    expect(await events.deadLetters.count(topic)).toBe(0)
  })

  it('take(25) across rounds, acking each: exactly 25 taken, the given-back rest claimed at delivery count 1, each entry once', async () => {
    const events = manager(options())
    const topic = randomName('adv-take')
    const group = randomName('g')
    const ids = await publishMany(events, topic, 1_000)
    const taken = await lastValueFrom(
      events.topic(topic).consume({ group, startFrom: 'beginning', batchSize: 10, claimInterval: 0 }).pipe(take(25), toArray()),
    )
    expect(taken.map((m) => m.streamId)).toEqual(ids.slice(0, 25))
    await Promise.all(taken.map((m) => m.ack()))
    const seen = new Map<string, number>()
    let maxCount = 0
    const sub = events
      .topic(topic)
      .consume({ group, batchSize: 10, claimInterval: 100, claimMinIdleTime: 60_000 })
      .pipe(
        handleEach((m) => {
          seen.set(m.streamId, (seen.get(m.streamId) ?? 0) + 1)
          maxCount = Math.max(maxCount, m.deliveryCount)
        }, { concurrency: 20 }),
      )
      .subscribe()
    await waitFor(() => seen.size === 975, 20_000, `975 entries (${kind})`)
    await sleep(200)
    sub.unsubscribe()
    expect([...seen.values()].every((n) => n === 1)).toBe(true)
    expect([...seen.keys(), ...taken.map((m) => m.streamId)].sort()).toEqual([...ids].sort())
    expect(maxCount).toBe(1)
  })

  it('close() while rounds are in flight: started messages settle, nothing lost; a new manager handles the rest, each event once', async () => {
    const topic = randomName('adv-close')
    const group = randomName('g')
    const carrier = manager(options())
    const ids = await publishMany(carrier, topic, 2_000)
    const handled = new Map<string, number>()
    const handler = async (m: Message): Promise<void> => {
      await sleep(Math.random() < 0.1 ? 5 : 0)
      handled.set(m.streamId, (handled.get(m.streamId) ?? 0) + 1)
    }
    // memory: one store shared by the managers; redis: each manager its own connections
    const next = (): EventManager =>
      kind === 'memory' ? createEventManager({ backend: recording(carrier.backend, [], () => 0), env: {}, delayedQueueEnabled: false }) : manager(options())
    for (let round = 0; round < 3; round++) {
      const events = next()
      events.topic(topic).consume({ group, batchSize: 10, startFrom: 'beginning', claimInterval: 0 }).pipe(handleEach(handler, { concurrency: 8 })).subscribe()
      const target = (round + 1) * 400
      await waitFor(() => handled.size >= target, 20_000, `${target} handled`)
      await events.close()
    }
    const last = next()
    last.topic(topic).consume({ group, batchSize: 10, claimInterval: 200, claimMinIdleTime: 300 }).pipe(handleEach(handler, { concurrency: 8 })).subscribe()
    await waitFor(() => handled.size === 2_000, 30_000, 'all 2,000 handled')
    await last.close()
    expect([...handled.keys()].sort()).toEqual([...ids].sort())
    const twice = [...handled.values()].filter((n) => n > 1).length
    expect(twice).toBe(0)
    expect(await carrier.deadLetters.count(topic)).toBe(0)
  }, 60_000)

  it('a slow handler at maxPendingMessages 5: no read or round asks for more than the free credit', async () => {
    const carrier = manager(options())
    const topic = randomName('adv-slow')
    const group = randomName('g')
    await publishMany(carrier, topic, 300)
    const calls: ReadCall[] = []
    let unsettled = 0
    let maxUnsettled = 0
    const events = createEventManager({ backend: recording(carrier.backend, calls, () => unsettled), env: {}, delayedQueueEnabled: false })
    open.push(events)
    let done = 0
    events
      .topic(topic)
      .consume({ group, startFrom: 'beginning', batchSize: 10, maxPendingMessages: 5, claimInterval: 0 })
      .pipe(
        handleEach(
          async () => {
            unsettled++
            maxUnsettled = Math.max(maxUnsettled, unsettled)
            await sleep(2)
            unsettled--
            done++
          },
          { concurrency: 5 },
        ),
      )
      .subscribe()
    await waitFor(() => done === 300, 30_000, '300 handled')
    expect(calls.length).toBeGreaterThan(0)
    expect(calls.filter((c) => c.kind === 'readMany')).toEqual([])
    for (const c of calls) {
      expect(sum(c.counts)).toBeLessThanOrEqual(5)
      expect(c.unsettled + sum(c.counts)).toBeLessThanOrEqual(5)
    }
    expect(maxUnsettled).toBeLessThanOrEqual(5)
  })
})

describe.each(backends)('read-ahead under a window (%s)', (kind, options) => {
  it('windowTumbling upstream of the settlement at maxPendingMessages 60: held + asked never exceeds 60; every event acked in one window', async () => {
    const carrier = manager(options())
    const topic = randomName('adv-window')
    const group = randomName('g')
    const BASE = 1_700_000_000_000
    for (let i = 0; i < 500; i += 100) {
      await carrier.publishBatch(topic, Array.from({ length: 100 }, (_, j) => newEvent('tick', { n: i + j }, { timestamp: BASE + (i + j) * 40 })))
    }
    const calls: { counts: readonly number[]; held: number }[] = []
    const box: { events?: EventManager } = {}
    const heldNow = (): number => box.events?.internals.subscriptions()[0]?.held ?? 0
    const wrapped = new Proxy(carrier.backend, {
      get(target, prop, receiver) {
        const value: unknown = Reflect.get(target, prop, receiver)
        if (typeof value !== 'function') return value
        if (prop === 'close') return () => Promise.resolve()
        if (prop !== 'createReader') return (value as (...a: unknown[]) => unknown).bind(target)
        return () => {
          const reader = (value as typeof carrier.backend.createReader).call(target)
          return {
            read: (t: string, g: string, c: string, request: Parameters<typeof reader.read>[3]) => {
              if (request.from === 'new') calls.push({ counts: [request.count], held: heldNow() })
              return reader.read(t, g, c, request)
            },
            ...(reader.readMany === undefined
              ? {}
              : {
                  readMany: (t: string, g: string, c: string, counts: readonly number[], blockMs: number) => {
                    calls.push({ counts: [...counts], held: heldNow() })
                    return (reader.readMany as NonNullable<typeof reader.readMany>).call(reader, t, g, c, counts, blockMs)
                  },
                }),
            close: () => reader.close(),
          }
        }
      },
    })
    const events = manager({ backend: wrapped })
    box.events = events
    const windows: Window<Message>[] = []
    events
      .topic(topic)
      .consume({ group, startFrom: 'beginning', batchSize: 10, maxPendingMessages: 60, claimInterval: 0 })
      .pipe(windowTumbling(1_000, { idleTimeout: 100 }))
      .subscribe((w) => {
        windows.push(w)
        void w.ack()
      })
    await waitFor(() => windows.reduce((n, w) => n + w.messages.length, 0) === 500, 30_000, `500 events windowed (${kind})`).catch((e: unknown) => {
      throw new Error(`${String(e)}: ${windows.length} windows of ${windows.map((w) => w.messages.length).join()}; held ${heldNow()}; ${calls.length} reads: ${JSON.stringify(calls.slice(-5))}`)
    })
    expect(windows).toHaveLength(20)
    expect(windows.every((w) => w.messages.length === 25)).toBe(true)
    for (const c of calls) expect(c.held + sum(c.counts)).toBeLessThanOrEqual(60)
    // Read-ahead rounds did run (only a round asks for more than batchSize: its reads ask for max(batchSize, 50)).
    expect(calls.some((c) => sum(c.counts) > 10)).toBe(true)
    expect(await carrier.deadLetters.count(topic)).toBe(0)
  })
})

describe('read-ahead on Redis while entries are deleted', () => {
  it('XDEL of entries while rounds read them: the others handled once each, the deleted ones never handled twice, nothing left pending', async () => {
    const events = manager({ redisUrl: server.url, claimInterval: 200, claimMinIdleTime: 500 })
    const topic = randomName('adv-xdel')
    const group = randomName('g')
    const ids = await publishMany(events, topic, 2_000)
    const key = `event:stream:{${topic}}`
    const runs = new Map<string, number>()
    events
      .topic(topic)
      .consume({ group, startFrom: 'beginning', batchSize: 10 })
      .pipe(
        handleEach(async (m) => {
          runs.set(m.streamId, (runs.get(m.streamId) ?? 0) + 1)
          await sleep(0)
        }, { concurrency: 10 }),
      )
      .subscribe()
    // delete every 7th entry from the far end, in chunks, while the consumer works through the backlog
    const doomed = ids.filter((_, i) => i % 7 === 3)
    const deleted = new Set<string>()
    for (let at = doomed.length - 1; at >= 0; at -= 20) {
      const chunk = doomed.slice(Math.max(0, at - 19), at + 1)
      await direct.xdel(key, ...chunk)
      for (const id of chunk) deleted.add(id)
      await sleep(1)
    }
    const survivors = ids.filter((id) => !deleted.has(id))
    await waitFor(() => survivors.every((id) => runs.has(id)), 30_000, 'every surviving entry handled')
    await waitFor(async () => Number((await direct.xpending(key, group))[0]) === 0, 20_000, 'nothing pending')
    for (const id of survivors) expect(runs.get(id)).toBe(1)
    for (const id of deleted) expect(runs.get(id) ?? 0).toBeLessThanOrEqual(1)
    console.log(`[adversarial-read-ahead] ${deleted.size} deleted, ${[...deleted].filter((id) => runs.has(id)).length} of them handled before their deletion`)
    expect(await events.deadLetters.count(topic)).toBe(0)
  }, 60_000)
})

describe('read-ahead on Redis through a faulty link', () => {
  it('connections reset again and again while rounds flow: every event handled, none more than twice, none dead-lettered', async () => {
    const publisher = manager({ redisUrl: server.url })
    const topic = randomName('adv-resets')
    const group = randomName('g')
    const ids = await publishMany(publisher, topic, 3_000)
    const calls: ReadCall[] = []
    const carrier = manager({ redisUrl: proxy.url, commandTimeout: 3_000 })
    const events = manager({ backend: recording(carrier.backend, calls, () => 0), claimInterval: 500, claimMinIdleTime: 1_000, maxRetries: 5 })
    const runs = new Map<string, number>()
    events
      .topic(topic)
      .consume({ group, startFrom: 'beginning', batchSize: 10 })
      .pipe(
        handleEach(async (m) => {
          runs.set(m.streamId, (runs.get(m.streamId) ?? 0) + 1)
          if (Math.random() < 0.05) await sleep(1)
        }, { concurrency: 10 }),
      )
      .subscribe()
    let resets = 0
    while (runs.size < 3_000 && resets < 40) {
      await sleep(40 + Math.floor(Math.random() * 60))
      proxy.resetAll()
      resets++
    }
    await waitFor(() => runs.size === 3_000, 40_000, 'all 3,000 handled')
    await waitFor(async () => Number((await direct.xpending(`event:stream:{${topic}}`, group))[0]) === 0, 20_000, 'nothing pending')
    expect([...runs.keys()].sort()).toEqual([...ids].sort())
    expect(Math.max(...runs.values())).toBeLessThanOrEqual(2)
    expect(calls.some((c) => c.kind === 'readMany')).toBe(true)
    expect(await publisher.deadLetters.count(topic)).toBe(0)
    console.log(`[adversarial-read-ahead] ${resets} resets; ${[...runs.values()].filter((n) => n > 1).length} entries run twice; ${calls.filter((c) => c.kind === 'readMany').length} rounds`)
  }, 90_000)
})
