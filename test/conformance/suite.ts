/**
 * The backend conformance suite: one set of tests of the delivery semantics
 * (DESIGN.md §4) that every backend must pass, through the public API only.
 * Modelled on Watermill's universal pub/sub tests (pubsub/tests/test_pubsub.go),
 * with their counts where they have one.
 *
 * @example
 * ```ts
 * // test/conformance/memory.test.ts
 * defineConformanceSuite('memory', (options) => createEventManager({ backend: 'memory', env: {}, ...options }))
 * ```
 */
import { randomUUID } from 'node:crypto'
import type { Observable, Subscription as RxSubscription } from 'rxjs'
import { describe, expect, it, onTestFinished } from 'vitest'
import { orderedBy } from '../../operators/index.js'
import { newEvent, type Event, type EventManager, type EventManagerOptions, type Message } from '../../src/index.js'
import { waitForDrained } from '../../src/testing.js'
import { sleep, waitFor } from '../support/events.js'
import { randomName } from '../support/redis.js'

/** Creates an event manager on the backend under test; the suite closes it after each test. */
export type MakeManager = (options: EventManagerOptions) => EventManager

/** Options every manager of the suite gets (a test may override them): quick retries and promotion. */
const SUITE_OPTIONS: EventManagerOptions = { retryBackoff: 10, delayedQueueCheckInterval: 50 }

/** Consume options that keep closing fast: short blocking reads, short drains. */
const FAST = { blockMs: 200, drainTimeout: 50 } as const

/** The parts of an event that must survive the round trip. */
const snapshot = (e: Event): Record<string, unknown> => ({
  id: e.id,
  name: e.name,
  payload: e.payload,
  headers: { ...e.headers },
  timestamp: e.timestamp,
  correlationId: e.correlationId,
})

const numbered = (count: number, name = 'test.numbered'): Event<{ n: number }>[] => Array.from({ length: count }, (_, n) => newEvent(name, { n }))

async function publishAll(events: EventManager, topic: string, list: readonly Event[]): Promise<void> {
  for (let i = 0; i < list.length; i += 1_000) await events.publishBatch(topic, list.slice(i, i + 1_000))
}

/** Subscribes `source`, keeping the subscription to be unsubscribed at the end of the test. */
function run<T>(source: Observable<T>, next: (value: T) => void): RxSubscription {
  const subscription = source.subscribe({ next, error: (e: unknown) => expect.fail(`subscription failed: ${String(e)}`) })
  onTestFinished(() => subscription.unsubscribe())
  return subscription
}

const countOf = (map: Map<string, number>, key: string): number => map.get(key) ?? 0

/**
 * Defines the conformance tests for one backend. `makeManager` receives the
 * options of a test and returns a new manager on that backend; every manager
 * is closed when its test ends.
 */
export function defineConformanceSuite(name: string, makeManager: MakeManager): void {
  const make = (options: EventManagerOptions = {}): EventManager => {
    const manager = makeManager({ ...SUITE_OPTIONS, ...options })
    onTestFinished(() => manager.close())
    return manager
  }

  describe(`conformance: ${name}`, () => {
    describe('publish and subscribe', () => {
      it('delivers 100 events in publish order with id, name, payload, headers, timestamp and correlation id intact', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        const published = Array.from({ length: 100 }, (_, i) =>
          newEvent(
            `test.event.${i % 7}`,
            i % 10 === 0 ? [`π ≈ 3.14159 ✓ ${i}`, null, true, 0.5, -i - 1] : { n: i, text: `héllo wörld ✓ ${i} "quoted" \\ \n`, nested: { list: [i, null, false], empty: {} } },
            {
              headers: { test: randomUUID(), index: String(i), ...(i % 3 === 0 ? { source: 'web-app', 'x-empty': '' } : {}) },
              ...(i % 4 === 0 ? { correlationId: `corr-${i}` } : {}),
              timestamp: 1_700_000_000_000 + i,
            },
          ),
        )
        const ids: string[] = []
        for (const e of published.slice(0, 50)) ids.push(await events.publish(topic, e))
        ids.push(...(await events.publishBatch(topic, published.slice(50))))
        expect(new Set(ids).size).toBe(100)

        const received: Message[] = []
        run(events.topic(topic).consume({ group, ...FAST }), (m) => {
          received.push(m)
          void m.ack()
        })
        await waitFor(() => received.length >= 100, 15_000, '100 events')
        expect(received.map((m) => snapshot(m.event))).toEqual(published.map(snapshot))
        expect(received.map((m) => m.streamId)).toEqual(ids)
        expect(received.every((m) => m.deliveryCount === 1 && m.topic === topic && m.group === group)).toBe(true)
        await waitForDrained(events, topic, group)
        expect(received).toHaveLength(100)
      })

      it('shares 5,000 events among 50 concurrent consumers of one group: each handled exactly once', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        const published = numbered(5_000)
        await publishAll(events, topic, published)
        const deliveries = new Map<string, number>()
        const consumers = new Set<string>()
        for (let c = 0; c < 50; c++) {
          run(events.topic(topic).consume({ group, consumer: `consumer-${c}`, batchSize: 10, ...FAST }), (m) => {
            deliveries.set(m.event.id, countOf(deliveries, m.event.id) + 1)
            consumers.add(m.consumer)
            void m.ack()
          })
        }
        await waitFor(() => deliveries.size === 5_000, 30_000, '5,000 distinct events')
        await waitForDrained(events, topic, group, { timeoutMs: 10_000 })
        expect([...deliveries.values()].every((n) => n === 1)).toBe(true)
        expect(new Set(published.map((e) => e.id))).toEqual(new Set(deliveries.keys()))
        expect(consumers.size).toBeGreaterThan(1)
      })

      it('keeps 20 topics × 100 events apart, published and consumed concurrently', async () => {
        const events = make()
        const group = randomName('g')
        const topics = Array.from({ length: 20 }, () => randomName('conf'))
        const received = new Map<string, number[]>(topics.map((t) => [t, []]))
        for (const topic of topics) {
          run(events.topic(topic).consume({ group, ...FAST }), (m) => {
            const { topic: origin, n } = m.event.payload as { topic: string; n: number }
            expect(origin).toBe(m.topic)
            received.get(m.topic)?.push(n)
            void m.ack()
          })
        }
        await Promise.all(topics.map((topic) => events.publishBatch(topic, Array.from({ length: 100 }, (_, n) => newEvent('test.multi', { topic, n })))))
        await waitFor(() => [...received.values()].every((l) => l.length >= 100), 20_000, '100 events on each of 20 topics')
        for (const list of received.values()) expect(list).toEqual(Array.from({ length: 100 }, (_, n) => n))
        await Promise.all(topics.map((topic) => waitForDrained(events, topic, group)))
      })

      it('every group receives every event (two groups, two consumers each)', async () => {
        const events = make()
        const topic = randomName('conf')
        const groups = [randomName('g'), randomName('g')]
        const published = numbered(100)
        const perGroup = new Map<string, Map<string, number>>(groups.map((g) => [g, new Map()]))
        for (const group of groups) {
          for (let c = 0; c < 2; c++) {
            run(events.topic(topic).consume({ group, ...FAST }), (m) => {
              const seen = perGroup.get(m.group)
              seen?.set(m.event.id, countOf(seen, m.event.id) + 1)
              void m.ack()
            })
          }
        }
        await publishAll(events, topic, published)
        await waitFor(() => [...perGroup.values()].every((seen) => seen.size >= 100), 15_000, 'both groups to receive 100 events')
        for (const group of groups) await waitForDrained(events, topic, group)
        for (const seen of perGroup.values()) {
          expect(new Set(seen.keys())).toEqual(new Set(published.map((e) => e.id)))
          expect([...seen.values()].every((n) => n === 1)).toBe(true)
        }
      })

      it('a new group receives the retained history; a group started from latest only what follows', async () => {
        const events = make()
        const topic = randomName('conf')
        const [first, late, latest] = [randomName('g'), randomName('g'), randomName('g')]
        const old = numbered(50, 'test.old')
        await publishAll(events, topic, old)
        const seen = new Map<string, string[]>([first, late, latest].map((g) => [g, []]))
        const consume = (group: string, startFrom?: 'latest'): void => {
          run(events.topic(topic).consume({ group, ...FAST, ...(startFrom === undefined ? {} : { startFrom }) }), (m) => {
            seen.get(m.group)?.push(m.event.id)
            void m.ack()
          })
        }
        consume(first)
        await waitForDrained(events, topic, first)
        consume(late)
        consume(latest, 'latest')
        await waitFor(async () => (await events.backend.groups(topic)).some((g) => g.name === latest), 5_000, 'the latest group to exist')
        const fresh = numbered(5, 'test.new')
        await events.publishBatch(topic, fresh)
        for (const group of [first, late, latest]) await waitForDrained(events, topic, group)
        const all = [...old, ...fresh].map((e) => e.id)
        expect(seen.get(first)).toEqual(all)
        expect(seen.get(late)).toEqual(all)
        expect(seen.get(latest)).toEqual(fresh.map((e) => e.id))
      })
    })

    describe('acknowledgement and redelivery', () => {
      it('redelivers nacked events: 2 nacked, all 100 arrive and are acked', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        const published = numbered(100)
        await publishAll(events, topic, published)
        const nacked: Message[] = []
        const redelivered: Message[] = []
        const acked = new Set<string>()
        run(events.topic(topic).consume({ group, ...FAST }), (m) => {
          if (nacked.length < 2 && m.deliveryCount === 1) {
            nacked.push(m)
            void m.nack(new Error('try again'))
            return
          }
          if (m.deliveryCount > 1) redelivered.push(m)
          acked.add(m.event.id)
          void m.ack()
        })
        await waitFor(() => acked.size === 100, 15_000, 'all 100 events acked')
        await waitForDrained(events, topic, group)
        expect(new Set(published.map((e) => e.id))).toEqual(acked)
        expect(redelivered.map((m) => m.event.id).sort()).toEqual(nacked.map((m) => m.event.id).sort())
        expect(redelivered.every((m) => m.deliveryCount === 2)).toBe(true)
        expect(await events.deadLetters.count(topic)).toBe(0)
      })

      it('unacked messages hold the credit: with maxPendingMessages 10 exactly 10 are delivered, one more per settlement', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        await publishAll(events, topic, numbered(50))
        const seen: Message[] = []
        let acking = false
        run(events.topic(topic).consume({ group, maxPendingMessages: 10, batchSize: 4, consumerTimeout: 60_000, ...FAST }), (m) => {
          seen.push(m)
          if (acking) void m.ack()
        })
        await waitFor(() => seen.length === 10, 5_000, '10 deliveries')
        await sleep(300)
        expect(seen).toHaveLength(10)
        expect((await events.backend.groups(topic)).find((g) => g.name === group)).toMatchObject({ pending: 10, lag: 40 })
        await seen[0]!.ack()
        await waitFor(() => seen.length === 11, 5_000, 'one more delivery after one ack')
        await sleep(200)
        expect(seen).toHaveLength(11)
        acking = true
        await Promise.all(seen.map((m) => m.ack()))
        await waitForDrained(events, topic, group)
        expect(new Set(seen.map((m) => m.event.id)).size).toBe(50)
        expect(seen).toHaveLength(50)
      })

      it('a started message unsettled after consumerTimeout is delivered again with a higher delivery count once its run returned', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        await events.publish(topic, newEvent('test.forgotten', {}))
        const seen: Message[] = []
        run(events.topic(topic).consume({ group, consumerTimeout: 200, ...FAST }), (m) => {
          // The timeout bounds a handler attempt: it counts from begin().
          m.begin()
          seen.push(m)
          if (m.deliveryCount > 1) void m.ack()
          // The first run "returns" (settles, too late) only after its attempt timed out: then comes the copy.
          else m.signal.addEventListener('abort', () => setTimeout(() => void m.ack(), 50))
        })
        await waitFor(() => seen.length === 2, 5_000, 'a redelivery after the consumer timeout')
        expect(seen.map((m) => m.deliveryCount)).toEqual([1, 2])
        expect(await seen[0]!.ack()).toBe('withdrawn')
        await waitForDrained(events, topic, group)
      })

      it('a restarted consumer with the same name first receives its own pending messages', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        await events.publishBatch(topic, [newEvent('a', 1), newEvent('b', 2), newEvent('c', 3)])
        const first: Message[] = []
        const sub1 = run(events.topic(topic).consume({ group, consumer: 'worker-1', blockMs: 200, drainTimeout: 10 }), (m) => {
          first.push(m)
          if (m.event.name === 'a') void m.ack()
        })
        await waitFor(() => first.length === 3, 5_000, 'three deliveries')
        sub1.unsubscribe()
        await sleep(100)
        await events.publish(topic, newEvent('d', 4))
        const second: Message[] = []
        run(events.topic(topic).consume({ group, consumer: 'worker-1', ...FAST }), (m) => {
          second.push(m)
          void m.ack()
        })
        await waitForDrained(events, topic, group)
        expect(second.map((m) => m.event.name)).toEqual(['b', 'c', 'd'])
        // b and c were emitted but never started: given back without a delivery counted.
        expect(second.map((m) => m.deliveryCount)).toEqual([1, 1, 1])
      })
    })

    describe('closing subscribers', () => {
      it('loses nothing when subscribers close and are recreated: 5,000 events', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        const published = numbered(5_000)
        await publishAll(events, topic, published)
        const received = new Set<string>()
        let deliveries = 0
        let attempts = 0
        while (received.size < 5_000 && attempts++ < 20) {
          const target = Math.min(5_000, received.size + 1_000)
          const sub = events.subscribe(
            topic,
            group,
            async (m) => {
              deliveries++
              received.add(m.event.id)
              await sleep(1) // slow enough that a subscriber is closed mid-stream, whatever the backend's speed
            },
            { consumer: 'worker', batchSize: 50, concurrency: 10, ...FAST },
          )
          await waitFor(() => received.size >= target, 15_000, `${target} distinct events (attempt ${attempts})`)
          await sub.unsubscribe()
        }
        expect(received.size).toBe(5_000)
        expect(await events.deadLetters.count(topic)).toBe(0)
        expect(attempts).toBeGreaterThanOrEqual(2)
        expect(deliveries).toBeLessThan(5_000 + attempts * 100) // at least once; a duplicate only at a restart
        // What was read but not handled when a subscriber closed is pending: the next one (same name) takes it.
        run(events.topic(topic).consume({ group, consumer: 'worker', ...FAST }), (m) => void m.ack())
        await waitForDrained(events, topic, group)
      })

      it('10 concurrent subscribe/close cycles leave nothing behind: later events all arrive', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        const before = numbered(50, 'test.before')
        await publishAll(events, topic, before)
        const handled = new Set<string>()
        await Promise.all(
          Array.from({ length: 10 }, async (_, i) => {
            for (let round = 0; round < 3; round++) {
              const sub = events.subscribe(topic, group, (m) => void handled.add(m.event.id), { consumer: `cycler-${i}-${round}`, ...FAST })
              await sleep(Math.floor(Math.random() * 20))
              await sub.unsubscribe()
            }
          }),
        )
        const after = numbered(50, 'test.after')
        await publishAll(events, topic, after)
        // What a closed subscriber read but never handled stays pending under its name; claiming recovers it.
        const sub = events.subscribe(topic, group, (m) => void handled.add(m.event.id), { ...FAST, claimMinIdleTime: 200, claimInterval: 50 })
        await waitFor(() => handled.size === 100, 15_000, 'all 100 events handled')
        await waitForDrained(events, topic, group)
        expect(handled).toEqual(new Set([...before, ...after].map((e) => e.id)))
        await sub.unsubscribe()
      })

      it('claims what a stopped consumer left unsettled, with a higher delivery count', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        await events.publishBatch(topic, numbered(5))
        const taken: Message[] = []
        let takenAt = 0
        const a = run(events.topic(topic).consume({ group, consumer: 'a', blockMs: 200, drainTimeout: 20 }), (m) => {
          taken.push(m)
          takenAt = Date.now()
        })
        await waitFor(() => taken.length === 5, 5_000, 'consumer a to take 5 messages')
        a.unsubscribe()
        const claimed: { message: Message; at: number }[] = []
        run(events.topic(topic).consume({ group, consumer: 'b', claimMinIdleTime: 300, claimInterval: 50, ...FAST }), (m) => {
          claimed.push({ message: m, at: Date.now() })
          void m.ack()
        })
        await waitFor(() => claimed.length === 5, 10_000, 'consumer b to claim 5 messages')
        await waitForDrained(events, topic, group)
        expect(claimed.map((c) => c.message.streamId).sort()).toEqual(taken.map((m) => m.streamId).sort())
        for (const { message, at } of claimed) {
          expect(message.consumer).toBe('b')
          expect(message.deliveryCount).toBeGreaterThanOrEqual(2)
          expect(at - takenAt).toBeGreaterThanOrEqual(250) // not before they were idle for claimMinIdleTime (300 ms, less clock slack)
        }
      })

      it('does not let a claimer take messages whose leases are being renewed', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        await events.publishBatch(topic, numbered(3))
        const held: Message[] = []
        // a renews its leases every claimMinIdleTime / 3 = 100 ms; b claims what is idle for 800 ms.
        run(events.topic(topic).consume({ group, consumer: 'a', claimMinIdleTime: 300, claimInterval: 0, consumerTimeout: 60_000, ...FAST }), (m) => void held.push(m))
        await waitFor(() => held.length === 3, 5_000, 'consumer a to hold 3 messages')
        const stolen: Message[] = []
        run(events.topic(topic).consume({ group, consumer: 'b', claimMinIdleTime: 800, claimInterval: 50, ...FAST }), (m) => {
          stolen.push(m)
          void m.ack()
        })
        await sleep(1_500)
        expect(stolen.map((m) => m.streamId), 'claimed although its lease was being renewed').toEqual([])
        await Promise.all(held.map((m) => m.ack()))
        await waitForDrained(events, topic, group)
        expect(stolen.map((m) => m.streamId)).toEqual([])
      })
      it('a nack does not take back a message another consumer claimed meanwhile', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        await events.publishBatch(topic, numbered(1))
        const seenByA: Message[] = []
        run(events.topic(topic).consume({ group, consumer: 'a', claimInterval: 0, consumerTimeout: 60_000, ...FAST }), (m) => void seenByA.push(m))
        await waitFor(() => seenByA.length === 1, 5_000, 'consumer a to hold the message')
        // b takes it over, as a claimer does when a's lease lapsed (a long GC pause, say)
        const claimed = await events.backend.claimIdle(topic, group, 'b', { minIdleMs: 0, cursor: '0-0', count: 10 })
        expect(claimed.entries.map((e) => e.id)).toEqual([seenByA[0]!.streamId])
        await seenByA[0]!.nack(new Error('a gives up'), { delay: 0 })
        await sleep(300)
        expect(seenByA).toHaveLength(1) // not delivered to a again
        const owners = await events.backend.consumers(topic, group)
        expect(owners.find((c) => c.name === 'b')?.pending).toBe(1)
        expect(owners.find((c) => c.name === 'a')?.pending ?? 0).toBe(0)
      })
    })

    describe('ordering', () => {
      it('orderedBy keeps per-key order over 16 keys with 1,000 events', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        const published = Array.from({ length: 1_000 }, (_, seq) => newEvent('test.keyed', { key: `k${seq % 16}`, seq }))
        await publishAll(events, topic, published)
        const perKey = new Map<string, number[]>()
        let inFlight = 0
        let maxInFlight = 0
        run(
          events
            .topic(topic)
            .consume({ group, batchSize: 100, maxPendingMessages: 200, ...FAST })
            .pipe(
              orderedBy(
                (m: Message) => (m.event.payload as { key: string }).key,
                8,
                async (m) => {
                  inFlight++
                  maxInFlight = Math.max(maxInFlight, inFlight)
                  await sleep(Math.random() * 2)
                  const { key, seq } = m.event.payload as { key: string; seq: number }
                  perKey.set(key, [...(perKey.get(key) ?? []), seq])
                  inFlight--
                  return m.ack()
                },
              ),
            ),
          () => undefined,
        )
        await waitFor(() => [...perKey.values()].reduce((n, l) => n + l.length, 0) === 1_000, 20_000, '1,000 events handled')
        await waitForDrained(events, topic, group)
        expect(perKey.size).toBe(16)
        for (const [key, seqs] of perKey) {
          const expected = published.map((e) => e.payload).filter((p) => p.key === key).map((p) => p.seq)
          expect(seqs).toEqual(expected)
        }
        expect(maxInFlight).toBeGreaterThan(1)
        expect(maxInFlight).toBeLessThanOrEqual(8)
      })
    })

    describe('delayed delivery', () => {
      it('delivers delayed events not before their due time, then promptly; a cancelled one never', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        const received: { name: string; at: number }[] = []
        run(events.topic(topic).consume({ group, ...FAST }), (m) => {
          received.push({ name: m.event.name, at: Date.now() })
          void m.ack()
        })
        const t0 = Date.now()
        const later = newEvent('test.later', { n: 1 })
        const cancelled = newEvent('test.cancelled', { n: 2 })
        const at = newEvent('test.at', { n: 3 })
        expect(await events.publishWithDelay(topic, later, 600)).toBe(later.id)
        expect(await events.publishWithDelay(topic, cancelled, 300)).toBe(cancelled.id)
        expect(await events.publishAt(topic, at, new Date(t0 + 300))).toBe(at.id)
        expect(await events.cancelDelayed(topic, cancelled.id)).toBe(true)
        expect(await events.cancelDelayed(topic, cancelled.id)).toBe(false)
        await events.publish(topic, newEvent('test.now', {}))
        await waitFor(() => received.length >= 1, 5_000, 'the immediate event')
        await sleep(Math.max(0, t0 + 200 - Date.now()))
        expect(received.map((r) => r.name)).toEqual(['test.now'])
        await waitFor(() => received.length >= 3, 5_000, 'the delayed events')
        await sleep(450) // past the cancelled event's due time, and then some
        expect(received.map((r) => r.name)).toEqual(['test.now', 'test.at', 'test.later'])
        const [, dueAt, dueLater] = received as [unknown, { at: number }, { at: number }]
        expect(dueAt.at).toBeGreaterThanOrEqual(t0 + 300)
        expect(dueAt.at).toBeLessThan(t0 + 300 + 2_000)
        expect(dueLater.at).toBeGreaterThanOrEqual(t0 + 600)
        expect(dueLater.at).toBeLessThan(t0 + 600 + 2_000)
        expect(await events.backend.countScheduled(topic)).toBe(0)
        await waitForDrained(events, topic, group, { includeDelayed: true })
      })
    })

    describe('dead letters', () => {
      it('dead-lettering moves one entry with its reason; replay reaches only the group that failed', async () => {
        const events = make()
        const topic = randomName('conf')
        const [failing, healthy] = [randomName('failing'), randomName('healthy')]
        const poison = newEvent('test.poison', { bad: true }, { headers: { source: 'test' } })
        await events.publishBatch(topic, [newEvent('test.ok', { n: 1 }), poison, newEvent('test.ok', { n: 2 })])
        const seen = new Map<string, Message[]>([
          [failing, []],
          [healthy, []],
        ])
        let fixed = false
        for (const group of [failing, healthy]) {
          run(events.topic(topic).consume({ group, ...FAST }), (m) => {
            seen.get(m.group)?.push(m)
            if (m.group === failing && m.event.name === 'test.poison' && !fixed) void m.deadLetter(new Error('bad data'))
            else void m.ack()
          })
        }
        await waitFor(async () => (await events.deadLetters.count(topic)) === 1, 5_000, 'one dead letter')
        await waitForDrained(events, topic, failing)
        await waitForDrained(events, topic, healthy)
        const [letter, ...rest] = await events.deadLetters.list(topic)
        expect(rest).toEqual([])
        const poisoned = seen.get(failing)?.find((m) => m.event.name === 'test.poison')
        expect(letter).toMatchObject({ topic, group: failing, error: 'bad data', attempts: 1, originalId: poisoned?.streamId })
        expect(letter?.failedAt).toBeGreaterThan(Date.now() - 60_000)
        expect(letter?.event === null ? null : snapshot(letter!.event)).toEqual(snapshot(poison))
        expect(await events.deadLetters.get(topic, letter!.dlqId)).toEqual(letter)

        fixed = true
        const replayedId = await events.deadLetters.replay(topic, letter!.dlqId)
        expect(replayedId).not.toBeNull()
        expect(await events.deadLetters.count(topic)).toBe(0)
        expect(await events.deadLetters.replay(topic, letter!.dlqId)).toBeNull()
        await waitFor(() => (seen.get(failing)?.length ?? 0) === 4, 5_000, 'the replayed event at the failing group')
        await waitForDrained(events, topic, failing)
        await waitForDrained(events, topic, healthy)
        const again = seen.get(failing)?.[3]
        expect(again?.streamId).toBe(replayedId)
        expect(again?.deliveryCount).toBe(1)
        expect(snapshot(again!.event)).toEqual(snapshot(poison))
        expect(seen.get(healthy)?.map((m) => m.event.name)).toEqual(['test.ok', 'test.poison', 'test.ok'])
        expect(await events.deadLetters.count(topic)).toBe(0)
      })

      it('counts deliveries to consumers that stop without settling: past maxRetries + 1 the entry goes to the DLQ', async () => {
        const events = make({ maxRetries: 1 })
        const topic = randomName('conf')
        const group = randomName('g')
        const poison = newEvent('test.crashes-its-consumer', {})
        await events.publish(topic, poison)
        const counts: number[] = []
        for (let restart = 0; restart < 2; restart++) {
          // As if the process crashed while handling it: taken, never settled.
          const sub = run(events.topic(topic).consume({ group, consumer: 'worker', blockMs: 200, drainTimeout: 10 }), (m) => {
            m.begin()
            counts.push(m.deliveryCount)
          })
          await waitFor(() => counts.length === restart + 1, 5_000, `delivery ${restart + 1}`)
          sub.unsubscribe()
          await sleep(100)
        }
        const after: Message[] = []
        run(events.topic(topic).consume({ group, consumer: 'worker', ...FAST }), (m) => void after.push(m))
        await waitFor(async () => (await events.deadLetters.count(topic)) === 1, 5_000, 'the poison message in the DLQ')
        await waitForDrained(events, topic, group)
        expect(counts).toEqual([1, 2])
        expect(after).toEqual([])
        const [letter] = await events.deadLetters.list(topic)
        expect(letter?.group).toBe(group)
        expect(letter?.attempts).toBeGreaterThanOrEqual(2) // the deliveries handed to a consumer (the third read only moved it)
        expect(letter?.attempts).toBeLessThanOrEqual(3)
        expect(letter?.error).toMatch(/delivery limit exceeded/)
        expect(letter?.event?.id).toBe(poison.id)
      })

      it('nacks past maxRetries dead-letter with the attempts; replayAll, remove and purge', async () => {
        const events = make({ maxRetries: 2 })
        const topic = randomName('conf')
        const group = randomName('g')
        await events.publishBatch(topic, numbered(4, 'test.flaky'))
        const counts = new Map<string, number[]>()
        let healthy = false
        run(events.topic(topic).consume({ group, ...FAST }), (m) => {
          counts.set(m.event.id, [...(counts.get(m.event.id) ?? []), m.deliveryCount])
          void (healthy ? m.ack() : m.nack(new Error('still broken')))
        })
        await waitFor(async () => (await events.deadLetters.count(topic)) === 4, 10_000, 'four dead letters')
        await waitForDrained(events, topic, group)
        expect([...counts.values()]).toEqual([
          [1, 2, 3],
          [1, 2, 3],
          [1, 2, 3],
          [1, 2, 3],
        ])
        const letters = await events.deadLetters.list(topic)
        expect(letters.map((l) => [l.group, l.attempts])).toEqual(Array.from({ length: 4 }, () => [group, 3]))
        expect(letters.every((l) => l.error.includes('still broken'))).toBe(true)
        expect((await events.deadLetters.list(topic, { count: 2, after: letters[1]!.dlqId })).map((l) => l.dlqId)).toEqual([letters[2]!.dlqId, letters[3]!.dlqId])

        expect(await events.deadLetters.remove(topic, letters[0]!.dlqId)).toBe(1)
        expect(await events.deadLetters.get(topic, letters[0]!.dlqId)).toBeNull()
        healthy = true
        expect(await events.deadLetters.replayAll(topic, { group: 'some-other-group' })).toBe(0)
        expect(await events.deadLetters.replayAll(topic, { group, filter: (l) => l.dlqId !== letters[3]!.dlqId })).toBe(2)
        await waitFor(() => [...counts.values()].filter((c) => c.length === 4).length === 2, 5_000, 'two replayed events')
        await waitForDrained(events, topic, group)
        expect(await events.deadLetters.purge(topic)).toBe(1)
        expect(await events.deadLetters.count(topic)).toBe(0)
      })
    })

    describe('giving back (engine)', () => {
      it('giveBack sets the idle time and the delivery count of entries the consumer owns, and leaves others alone', async () => {
        const events = make()
        const backend = events.backend
        const topic = randomName('conf')
        const group = randomName('g')
        await backend.ensureGroup(topic, group, 'beginning')
        const [id] = await backend.append(topic, [['id', randomUUID(), 'name', 'e', 'payload', '1']])
        const reader = backend.createReader()
        try {
          const [entry] = await reader.read(topic, group, 'a', { count: 1, blockMs: 1, from: 'new' })
          expect(entry?.deliveryCount).toBe(1)
          if (backend.giveBack === undefined) throw new Error('giveBack missing')
          // Not the owner: nothing happens.
          expect(await backend.giveBack(topic, group, 'b', [{ id: id!, retryCount: 0 }], 60_000)).toEqual([])
          expect(await backend.giveBack(topic, group, 'a', [{ id: id!, retryCount: 0 }], 60_000)).toEqual([id])
          // Claimable at once by anyone; the claim adds one: the count it had.
          const claimed = await backend.claimIdle(topic, group, 'b', { minIdleMs: 60_000, cursor: '0-0', count: 10 })
          expect(claimed.entries.map((e) => [e.id, e.deliveryCount])).toEqual([[id, 1]])
          // Given back to its owner, re-read by it (XREADGROUP with an id adds one): the same.
          expect(await backend.giveBack(topic, group, 'b', [{ id: id!, retryCount: 0 }], 0)).toEqual([id])
          const reread = await reader.read(topic, group, 'b', { count: 10, blockMs: 0, from: 'pending', after: '0' })
          expect(reread.map((e) => e.deliveryCount)).toEqual([1])
        } finally {
          await reader.close()
        }
      })

      it('take(1) gives the unemitted rest of the batch back at once: another consumer claims them with their counts unchanged', async () => {
        const events = make()
        const topic = randomName('conf')
        const group = randomName('g')
        await events.publishBatch(topic, numbered(6, 'test.take'))
        const { firstValueFrom, take } = await import('rxjs')
        const first = await firstValueFrom(events.topic(topic).consume({ group, consumer: 'one', claimMinIdleTime: 60_000, ...FAST }).pipe(take(1)))
        await sleep(50)
        const claimed = await events.backend.claimIdle(topic, group, 'two', { minIdleMs: 60_000, cursor: '0-0', count: 10 })
        expect(claimed.entries.map((e) => e.deliveryCount)).toEqual([1, 1, 1, 1, 1])
        expect(first.begin()).toBe(true)
        expect(await first.ack()).toBe('acked')
      })
    })
  })
}
