/**
 * Issue #10, "Must show": with the defaults, a backlog of 5,000 messages with
 * 20 ms handlers at concurrency 1 gives exactly 5,000 handler runs and 0 dead
 * letters, for `handleEach`, `mergeMap(…, 1)` and `concatMap`.
 *
 * 5,000 × 20 ms is 100 s of handling, longer than every default timer that
 * could punish a queued message (consumerTimeout 30 s, claimInterval 30 s,
 * claimMinIdleTime 1 m), so the run must last that long: it runs in virtual
 * time, under the simulation's clock, which replaces the global timers, `Date`
 * and `performance.now` (the engine's own timers included) and moves only when
 * the test runs it. Nothing in the backlog runs is test-sized: the manager is
 * built with no option but the backend (and a logger), and an empty
 * environment.
 *
 * Also here: what `begin()` buys a hand-written `mergeMap` whose queue outlasts
 * `consumerTimeout`, and item 9 — `TestScheduler.run()` cannot drive
 * `consume()` (Promises), the supported ways (`advanceVirtualTime` outside
 * `run()`, `run()` over test messages, vitest's fake timers for the engine's
 * own timers).
 */
import * as t from 'io-ts'
import { pino } from 'pino'
import { concatMap, map, mergeMap, tap, throwError, timer, type Observable, type OperatorFunction } from 'rxjs'
import { TestScheduler } from 'rxjs/testing'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { decode, handleEach } from '../../operators/index.js'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import type { Message } from '../../src/consumer/message.js'
import { createEventManager, newEvent, type EventManager } from '../../src/index.js'
import { advanceVirtualTime, closeTestEventManagers, createTestEventManager, createTestMessage } from '../../src/testing.js'
import { drainMicrotasks, VirtualClock } from '../simulation/clock.js'

const START_MS = Date.UTC(2026, 0, 1)
const EVENTS = 5_000
const HANDLER_MS = 20

let clock: VirtualClock | undefined

afterEach(async () => {
  await closeTestEventManagers()
  clock?.uninstall()
  clock = undefined
  await drainMicrotasks()
})

/** A random topic and group per test. */
const names = (): { topic: string; group: string } => ({
  topic: `t-${Math.random().toString(36).slice(2)}`,
  group: `g-${Math.random().toString(36).slice(2)}`,
})

/** Runs the virtual clock until `promise` settles (at most `maxMs` of virtual time), and returns its value. */
async function settled<T>(c: VirtualClock, promise: Promise<T>, maxMs = 60_000): Promise<T> {
  const state = { done: false }
  promise.then(
    () => (state.done = true),
    () => (state.done = true),
  )
  await c.runUntil(c.now() + maxMs, () => state.done)
  if (!state.done) throw new Error(`not settled within ${String(maxMs)} ms of virtual time`)
  return promise
}

/** What one run saw: handler runs per stream id, the delivery counts they saw, and overlaps. */
class Ledger {
  readonly runs = new Map<string, number>()
  readonly deliveryCounts = new Map<number, number>()
  readonly running = new Set<string>()
  readonly outcomes = new Map<string, number>()
  overlaps = 0
  refused = 0
  total = 0
  /** Messages the source emitted, and the most emitted and not yet settled at once (what the credit allows). */
  emitted = 0
  maxInFlight = 0

  delivered(): void {
    this.emitted++
    let settled = 0
    for (const n of this.outcomes.values()) settled += n
    this.maxInFlight = Math.max(this.maxInFlight, this.emitted - settled - this.refused)
  }

  constructor(readonly handlerMs = HANDLER_MS) {}

  async run(m: Message): Promise<void> {
    this.total++
    this.runs.set(m.streamId, (this.runs.get(m.streamId) ?? 0) + 1)
    this.deliveryCounts.set(m.deliveryCount, (this.deliveryCounts.get(m.deliveryCount) ?? 0) + 1)
    if (this.running.has(m.streamId)) this.overlaps++
    this.running.add(m.streamId)
    // The work: a timer of the installed virtual clock.
    await new Promise<void>((resolve) => setTimeout(resolve, this.handlerMs))
    this.running.delete(m.streamId)
  }

  outcome(outcome: string): void {
    this.outcomes.set(outcome, (this.outcomes.get(outcome) ?? 0) + 1)
  }

  count(outcome: string): number {
    return this.outcomes.get(outcome) ?? 0
  }
}

interface Run {
  readonly ledger: Ledger
  readonly elapsedMs: number
  readonly warnings: string[]
  readonly pending: number
  readonly lag: number
  readonly deadLetters: number
  /** The dead letters' reasons (their `error` field). */
  readonly deadLetterReasons: string[]
  readonly completed: boolean
  readonly errored: unknown
  readonly closeMs: number
}

type Pipeline = (ledger: Ledger) => OperatorFunction<Message, unknown>

interface Backlog {
  /** How many events are published (default 5,000). */
  readonly events?: number
  /** How long each handler run takes, virtual ms (default 20). */
  readonly handlerMs?: number
  /** Consume options besides the group (default none: the defaults). */
  readonly consume?: { readonly maxPendingMessages?: number }
}

/** Publishes the backlog, consumes it at the defaults through `pipeline` until every event is acked, then closes. */
async function drainAtDefaults(pipeline: Pipeline, backlog: Backlog = {}): Promise<Run> {
  const count = backlog.events ?? EVENTS
  const handlerMs = backlog.handlerMs ?? HANDLER_MS
  const c = new VirtualClock(START_MS)
  clock = c
  c.install()
  const warnings: string[] = []
  const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) })
  const events: EventManager = createEventManager({ backend: new MemoryBackend({ now: () => c.now() }), env: {}, logger, groupGauges: false })
  const { topic, group } = names()
  for (let i = 0; i < count; i += 500) {
    await settled(c, events.publishBatch(topic, Array.from({ length: Math.min(500, count - i) }, (_, j) => newEvent('job', { n: i + j }))))
  }
  const ledger = new Ledger(handlerMs)
  let completed = false
  let errored: unknown
  const t0 = c.now()
  const source: Observable<unknown> = events
    .topic(topic)
    .consume({ group, ...backlog.consume })
    .pipe(
      tap(() => ledger.delivered()),
      pipeline(ledger),
    )
  source.subscribe({
    complete: () => (completed = true),
    error: (error: unknown) => (errored = error),
  })
  // Generous: 100 s of handling; a stall at the defaults would add 30 s (a claim tick) or more.
  await c.runUntil(t0 + 10 * count * handlerMs, () => ledger.count('acked') >= count || errored !== undefined)
  const elapsedMs = c.now() - t0
  // Let the last acks' coalesced XACK land.
  await c.runUntil(c.now() + 100)
  const info = (await settled(c, events.backend.groups(topic))).find((g) => g.name === group)
  const deadLetters = await settled(c, events.deadLetters.count(topic))
  const letters = await settled(c, events.deadLetters.list(topic, { count: count + 1 }))
  const closeAt = c.now()
  await settled(c, events.close())
  const closeMs = c.now() - closeAt
  await c.runUntil(c.now() + 10)
  return { ledger, elapsedMs, warnings, pending: info?.pending ?? -1, lag: info?.lag ?? -1, deadLetters, deadLetterReasons: letters.map((l) => l.error), completed, errored, closeMs }
}

/** The user's expectation, in the words: each message handled once, nothing dead-lettered, no stall, completes on close(). */
function expectEachHandledOnce(run: Run, credit: number, count = EVENTS): void {
  const { ledger } = run
  expect(ledger.runs.size).toBe(count)
  expect(run.errored).toBeUndefined()
  expect(ledger.total).toBe(count)
  expect([...ledger.runs.values()].every((n) => n === 1)).toBe(true)
  expect(ledger.count('acked')).toBe(count)
  expect([...ledger.outcomes.keys()]).toEqual(['acked'])
  // No give-back that counted a delivery, no redelivery at all: every run saw its first delivery.
  expect([...ledger.deliveryCounts]).toEqual([[1, count]])
  expect(ledger.overlaps).toBe(0)
  expect(run.deadLetters).toBe(0)
  expect(run.pending).toBe(0)
  expect(run.lag).toBe(0)
  // At concurrency 1 the handling alone takes count × handlerMs (100 s for the backlog); a stall (a claim
  // tick, a timeout, a blocked read) would add 2 s or more.
  expect(run.elapsedMs).toBeGreaterThanOrEqual(count * ledger.handlerMs)
  expect(run.elapsedMs).toBeLessThan(count * ledger.handlerMs + 2_000)
  // Nothing was given back or timed out: the library warns once when it gives back unstarted messages.
  expect(run.warnings).toEqual([])
  expect(run.completed).toBe(true)
  // Shutdown in milliseconds: nothing is left in work, so close() waits for no drainTimeout.
  expect(run.closeMs).toBeLessThan(100)
  // The backlog fills the credit (README, Backpressure: unless maxPendingMessages is set, the declared concurrency
  // plus 8 × max(batchSize, 50), or 4 × batchSize when nothing declares one). One more may be seen here: the credit is released when ack() is called, the outcome is
  // recorded when its Promise resolves.
  expect(ledger.maxInFlight).toBeGreaterThanOrEqual(credit)
  expect(ledger.maxInFlight).toBeLessThanOrEqual(credit + 1)
}

/** The credit at the defaults (batchSize 10) when nothing downstream declares a demand: 4 × batchSize of read-ahead. */
const DEFAULT_CREDIT = 4 * 10
/** The read-ahead at the defaults on top of a declared demand (handleEach): two rounds of 4 reads of max(batchSize, 50). */
const DEMAND_READ_AHEAD = 8 * 50

/** The hand-written operators of the README's table: begin() first (skip what is withdrawn), then work, then ack. */
const withBegin = (ledger: Ledger) => async (m: Message): Promise<void> => {
  if (!m.begin()) {
    ledger.refused++
    return
  }
  await ledger.run(m)
  ledger.outcome(await m.ack())
}

/** The same without begin(): what an RxJS user writes first. */
const withoutBegin = (ledger: Ledger) => async (m: Message): Promise<void> => {
  await ledger.run(m)
  ledger.outcome(await m.ack())
}

describe('with the defaults, a backlog of 5,000 with 20 ms handlers at concurrency 1 (virtual time: 100 s of handling)', () => {
  it('(a) handleEach(h, { concurrency: 1 }): exactly 5,000 runs, 5,000 acked, every delivery count 1, 0 dead letters, 100 s, completes on close()', async () => {
    const run = await drainAtDefaults((ledger) => (source) =>
      source.pipe(
        handleEach((m: Message) => ledger.run(m), { concurrency: 1 }),
        // handleEach emits each outcome.
        tap(({ outcome }) => ledger.outcome(outcome)),
      ),
    )
    // handleEach declares its concurrency: 1 + 400.
    expectEachHandledOnce(run, 1 + DEMAND_READ_AHEAD)
  }, 120_000)

  it('(b) mergeMap(async m => { if (!m.begin()) return; await work; await m.ack() }, 1): the same', async () => {
    const run = await drainAtDefaults((ledger) => mergeMap(withBegin(ledger), 1))
    expect(run.ledger.refused).toBe(0)
    expectEachHandledOnce(run, DEFAULT_CREDIT)
  }, 120_000)

  it('(c) concatMap(async m => { if (!m.begin()) return; await work; await m.ack() }): the same', async () => {
    const run = await drainAtDefaults((ledger) => concatMap(withBegin(ledger)))
    expect(run.ledger.refused).toBe(0)
    expectEachHandledOnce(run, DEFAULT_CREDIT)
  }, 120_000)

  it('(d) mergeMap(…, 1) WITHOUT begin(), maxPendingMessages unset: also each handled once — the credit (40) × 20 ms keeps every wait far below consumerTimeout', async () => {
    // Nothing downstream declares a concurrency, so the credit is 4 × batchSize = 40: at most 40 messages wait in
    // mergeMap's buffer, the last one 40 × 20 ms = 0.8 s, far below the 30 s consumerTimeout. None is given back,
    // none dead-lettered, none run twice (concurrently or not). Without begin() the library cannot see the
    // queue's progress, though: the next test shows where it breaks (a wait above consumerTimeout).
    const run = await drainAtDefaults((ledger) => mergeMap(withoutBegin(ledger), 1))
    expectEachHandledOnce(run, DEFAULT_CREDIT)
  }, 120_000)
})

describe('the same at 50 ms handlers (2,000 events, 100 s): where a credit larger than the work would punish queued messages', () => {
  // At 20 ms even the engine before issue #10 (credit 1,000, its timeout counting from the read) passes the
  // backlog: its last queued message waits 1,000 × 20 ms = 20 s, under the 30 s consumerTimeout. At 50 ms that
  // queue waits 50 s; on that engine (77fc2ed) handleEach and concatMap each ran 6,203 times for 2,000 events and
  // dead-lettered 1,401 good ones. Here the credit follows the work (401 / 40), so nothing waits long.
  const FIFTY = { events: 2_000, handlerMs: 50 }

  it('handleEach(h, { concurrency: 1 }): each handled once, 0 dead letters, 100 s', async () => {
    const run = await drainAtDefaults(
      (ledger) => (source) =>
        source.pipe(
          handleEach((m: Message) => ledger.run(m), { concurrency: 1 }),
          tap(({ outcome }) => ledger.outcome(outcome)),
        ),
      FIFTY,
    )
    // 1 + 400: the last of a full queue waits 400 × 50 ms = 20 s, under consumerTimeout (and handleEach starts
    // them in order, so its queue keeps its lease however long it is).
    expectEachHandledOnce(run, 1 + DEMAND_READ_AHEAD, FIFTY.events)
  }, 120_000)

  it('mergeMap(…, 1) with begin(): the same', async () => {
    const run = await drainAtDefaults((ledger) => mergeMap(withBegin(ledger), 1), FIFTY)
    expectEachHandledOnce(run, DEFAULT_CREDIT, FIFTY.events)
  }, 120_000)

  it('concatMap with begin(): the same', async () => {
    const run = await drainAtDefaults((ledger) => concatMap(withBegin(ledger)), FIFTY)
    expectEachHandledOnce(run, DEFAULT_CREDIT, FIFTY.events)
  }, 120_000)
})

describe('what begin() buys in a hand-written mergeMap: a queue longer than consumerTimeout (defaults, virtual time)', () => {
  // 1 s handlers and the default credit (40): the last message of a full buffer waits 40 s, above the 30 s timeout.
  const SLOW = { events: 200, handlerMs: 1_000 }

  it('with begin(): each handled once, 0 dead letters, no stall (a queue that keeps starting messages keeps its lease)', async () => {
    const run = await drainAtDefaults((ledger) => mergeMap(withBegin(ledger), 1), SLOW)
    expect(run.ledger.refused).toBe(0)
    expectEachHandledOnce(run, DEFAULT_CREDIT, SLOW.events)
  }, 120_000)

  it('with begin() and a credit of 4,000 (an 80 s queue at 20 ms, past claimMinIdleTime too): the same, no entry claimed from under its queue', async () => {
    const run = await drainAtDefaults((ledger) => mergeMap(withBegin(ledger), 1), { consume: { maxPendingMessages: 4_000 } })
    expect(run.ledger.refused).toBe(0)
    expectEachHandledOnce(run, 4_000)
  }, 120_000)

  it('without begin(): what waited past consumerTimeout is given back while still queued; its run goes ahead anyway (its ack resolves \'withdrawn\'), and what was given back 3 times is dead-lettered as never_started although a handler ran it', async () => {
    // Documented (README, "What the library does", lines 1 and 3): without begin() no message is ever *started*, so
    // the engine cannot tell mergeMap's buffer from a filter's drops. Every message still queued at its delivery +
    // consumerTimeout is given back (no delivery counted) and delivered again; mergeMap runs the stale copy
    // anyway, so the work is done twice; after maxGiveBacks (3) give-backs the entry goes to the DLQ as
    // never_started. A user who writes this gets one warning naming the cause.
    const run = await drainAtDefaults((ledger) => mergeMap(withoutBegin(ledger), 1), SLOW)
    const { ledger } = run
    expect(run.errored).toBeUndefined()
    // Run more than once each: the stale copies ran too.
    expect(ledger.total).toBeGreaterThan(SLOW.events)
    expect(ledger.count('withdrawn')).toBe(ledger.total - ledger.count('acked'))
    expect(ledger.count('withdrawn')).toBeGreaterThan(0)
    // Given back without counting a delivery: every copy a handler saw was its first delivery.
    expect([...ledger.deliveryCounts.keys()]).toEqual([1])
    // Never two runs of one entry at once (concurrency 1; the engine never starts anything here).
    expect(ledger.overlaps).toBe(0)
    // Everything ends settled, acked or dead-lettered as never_started: nothing else is dead-lettered.
    expect(ledger.count('acked') + run.deadLetters).toBe(SLOW.events)
    expect(run.deadLetters).toBeGreaterThan(0)
    expect(run.deadLetterReasons.every((reason) => reason.startsWith('never_started'))).toBe(true)
    expect(run.pending).toBe(0)
    // One warning naming the likely cause, then one line per dead letter.
    const lines = run.warnings.map((w) => (JSON.parse(w) as { msg: string }).msg)
    expect(lines.filter((msg) => msg.includes('not started within consumerTimeout'))).toHaveLength(1)
    expect(lines.filter((msg) => msg === 'moved to the dead letter queue')).toHaveLength(run.deadLetters)
    expect(run.completed).toBe(true)
    console.log(`without begin(), 1 s handlers: ${String(ledger.total)} runs for ${String(SLOW.events)} events, ${String(ledger.count('acked'))} acked, ${String(ledger.count('withdrawn'))} acks withdrawn, ${String(run.deadLetters)} never_started, ${String(run.elapsedMs / 1_000)} s virtual`)
  }, 120_000)
})

describe('TestScheduler.run() and the Promise-based consumer (issue #10, item 9)', () => {
  const Order = t.type({ orderId: t.number })

  it('inside scheduler.run(), consume() → decode → handleEach emits nothing: run() flushes synchronously, the memory backend answers with Promises, so nothing is read before run() returns', async () => {
    const events = createTestEventManager()
    const { topic, group } = names()
    await events.publishBatch(topic, [newEvent('order.placed', { orderId: 1 }), newEvent('order.placed', { orderId: 2 })])
    const actuals: unknown[] = []
    const scheduler = new TestScheduler((actual) => void actuals.push(actual))
    scheduler.run(({ expectObservable }) => {
      const outcomes = events
        .topic(topic)
        // drainTimeout 0: after run() the handler's timer is on a scheduler nobody flushes; close() need not wait for it.
        .consume({ group, drainTimeout: 0 })
        .pipe(
          decode(Order),
          handleEach(() => timer(20, scheduler), { scheduler }),
          map(({ message, outcome }) => `${String(message.event.payload.orderId)} ${outcome}`),
        )
      expectObservable(outcomes).toBe('20ms a 19ms b', { a: '1 acked', b: '2 acked' })
    })
    // The assertion ran at the end of run() and saw no notification at all (the subscription it made stays
    // open until the manager closes, after the test).
    expect(actuals).toEqual([[]])
  })

  it('the supported ways: advanceVirtualTime(scheduler, ms) outside run() for consume() pipelines; run() for handleEach over createTestMessage with Observable handlers, retries included', async () => {
    // Outside run(): the README's example (one frame is 10 virtual ms).
    const outside = new TestScheduler((actual, expected) => expect(actual).toEqual(expected))
    const events = createTestEventManager()
    const { topic, group } = names()
    await events.publishBatch(topic, [newEvent('order.placed', { orderId: 1 }), newEvent('order.placed', { orderId: 2 })])
    const consumed = events
      .topic(topic)
      .consume({ group })
      .pipe(
        decode(Order),
        handleEach(() => timer(20, outside), { scheduler: outside }),
        map(({ message, outcome }) => `${String(message.event.payload.orderId)} ${outcome}`),
      )
    const expectation = outside.expectObservable(consumed)
    await advanceVirtualTime(outside, 100)
    expectation.toBe('--a-b', { a: '1 acked', b: '2 acked' })
    outside.flush()

    // Inside run(): no Promise on the way (test messages settle synchronously), so handleEach and its retry
    // delays run in run()'s virtual time, one frame per ms.
    const inside = new TestScheduler((actual, expected) => expect(actual).toEqual(expected))
    inside.run(({ cold, expectObservable }) => {
      const first = createTestMessage({ orderId: 1 })
      const second = createTestMessage({ orderId: 2 })
      let failures = 0
      const outcomes = cold('a 9ms b', { a: first, b: second }).pipe(
        handleEach((m) => (m === first && failures++ === 0 ? throwError(() => new Error('payment service down')) : timer(20, inside)), {
          scheduler: inside,
          retry: { initialDelay: 100 },
        }),
        map(({ message, outcome }) => `${String(message.event.payload.orderId)} ${outcome}`),
      )
      // Order 1 fails at 0, is retried at 100 and done at 120; order 2 waits for it (concurrency 1): 140.
      expectObservable(outcomes).toBe('120ms a 19ms b', { a: '1 acked', b: '2 acked' })
    })

    // Without its scheduler, handleEach emits an outcome once the settlement's Promise resolved: after run().
    const actuals: unknown[] = []
    const unscheduled = new TestScheduler((actual) => void actuals.push(actual))
    unscheduled.run(({ cold, expectObservable }) => {
      const outcomes = cold('a', { a: createTestMessage({ orderId: 1 }) }).pipe(handleEach(() => timer(20)))
      expectObservable(outcomes).toBe('20ms a', { a: expect.anything() as unknown })
    })
    expect(actuals).toEqual([[]])
  })
})

describe("vitest's fake timers drive the engine's own timers too (the supported way for Promise handlers at the real timeouts)", () => {
  it('at the defaults, a Promise handler that ignores its signal for 40 s is timed out at 30 s; its late settlement is withdrawn and the copy delivered again is acked', async () => {
    vi.useFakeTimers({ now: START_MS })
    try {
      // All defaults, on the memory backend (its clock is Date.now, faked here).
      const events = createEventManager({ backend: 'memory', env: {} })
      const { topic, group } = names()
      await events.publishBatch(topic, [1, 2, 3].map((n) => newEvent('order.placed', { n })))
      const log: string[] = []
      const at = (): string => String(Date.now() - START_MS)
      const orderOf = (m: Message): number => (m.event.payload as { n: number }).n
      let slow = true
      let completed = false
      events
        .topic(topic)
        .consume({ group })
        .pipe(
          handleEach(async (m: Message) => {
            log.push(`${at()} start ${String(orderOf(m))} #${String(m.deliveryCount)}`)
            m.signal.addEventListener('abort', () => log.push(`${at()} abort ${String(orderOf(m))}`))
            const ms = orderOf(m) === 1 && slow ? 40_000 : 20
            slow = slow && orderOf(m) !== 1
            await new Promise((resolve) => setTimeout(resolve, ms))
          }),
        )
        .subscribe({
          next: ({ message, outcome }) => log.push(`${String(orderOf(message))} ${outcome} #${String(message.deliveryCount)}`),
          complete: () => (completed = true),
        })
      await vi.advanceTimersByTimeAsync(120_000)
      expect(log).toEqual([
        '0 start 1 #1',
        '30000 abort 1', // consumerTimeout (30 s) bounds the attempt: its signal aborts, a nack is recorded
        '40000 start 2 #1', // concurrency 1: the next starts when the slow run returned
        '1 withdrawn #1', // the late run's own settlement: too late, nothing recorded
        '40020 start 3 #1',
        '2 acked #1',
        '40040 start 1 #2', // delivered again once the timed-out run had returned, one delivery counted
        '3 acked #1',
        '1 acked #2',
      ])
      // Close while the timers are still fake: the engine's timers were made by them.
      const closing = events.close()
      await vi.advanceTimersByTimeAsync(1_000)
      await closing
      expect(completed).toBe(true)
    } finally {
      vi.useRealTimers()
    }
  })
})
