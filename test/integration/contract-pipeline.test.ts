/**
 * Issue #10, "Must show": every row of the table, named after the pattern, with
 * the RxJS user's expectation — each message handled once, nothing
 * dead-lettered that a handler did not fail, no stall, the Observable
 * completing. End to end on the memory backend AND on Redis, with test-sized
 * timeouts; no wall-clock assertions (generous bounds only).
 */
import {
  concatMap,
  debounceTime,
  defer,
  distinctUntilChanged,
  exhaustMap,
  filter,
  lastValueFrom,
  map,
  mergeMap,
  retry,
  sample,
  skip,
  Subject,
  switchMap,
  takeUntil,
  throttleTime,
  type MonoTypeOperatorFunction,
  type Observable,
} from 'rxjs'
import { afterEach, describe, expect, it } from 'vitest'
import { ackOnComplete, filterMessages, handleEach, orderedBy, type Handled } from '../../operators/index.js'
import { isWithdrawn, type Message } from '../../src/consumer/message.js'
import type { EventManager } from '../../src/index.js'
import type { Outcome } from '../../src/settle.js'
import { closeTestEventManagers, waitForDrained } from '../../src/testing.js'
import { sleep, waitFor } from '../support/events.js'
import { randomName } from '../support/redis.js'
import { BACKENDS, managerOn, payloadN, publishMany } from '../support/contract.js'

afterEach(closeTestEventManagers)

const dlqCount = (events: EventManager, topic: string): Promise<number> => events.backend.dlqCount(topic)

/** Per event number, how many handler runs it got. */
function runCounter(): { runs: Map<number, number>; run: (m: Message) => void; total: () => number } {
  const runs = new Map<number, number>()
  return {
    runs,
    run: (m) => runs.set(payloadN(m), (runs.get(payloadN(m)) ?? 0) + 1),
    total: () => [...runs.values()].reduce((a, b) => a + b, 0),
  }
}

describe.each(BACKENDS)('the consumer contract on the %s backend', (kind) => {
  describe('mergeMap(async m => {…; await m.ack()}, 2), concatMap, handleEach({ concurrency: 2 }), credit larger than concurrency', () => {
    // The credit: 50 for the library's handleEach and the mergeMap; a hand-written concatMap sizes it so that what it
    // queues starts within the consumer timeout (the README's rule: 10 × 20 ms < 300 ms), else what waits longer is given back.
    const variants: [string, number, (work: (m: Message) => Promise<Outcome | undefined>) => (s: Observable<Message>) => Observable<unknown>][] = [
      ['mergeMap(…, 2) with msg.begin()', 50, (work) => mergeMap(async (m: Message) => (m.begin() ? work(m) : undefined), 2)],
      ['concatMap with msg.begin()', 10, (work) => concatMap(async (m: Message) => (m.begin() ? work(m) : undefined))],
      ['handleEach({ concurrency: 2 })', 50, (work) => handleEach((m: Message) => work(m).then(() => undefined), { concurrency: 2 })],
    ]
    it.each(variants)('%s (credit %i): each message handled once, no ack() silently resolves nacked, nothing dead-lettered', async (_name, credit, operator) => {
      const events = managerOn(kind)
      const topic = randomName('row1')
      const group = randomName('g')
      await publishMany(events, topic, 60)
      const counter = runCounter()
      const acks: Outcome[] = []
      const sub = events
        .topic(topic)
        .consume({ group, maxPendingMessages: credit })
        .pipe(
          operator(async (m) => {
            counter.run(m)
            await sleep(20)
            const outcome = await m.ack()
            acks.push(outcome)
            return outcome
          }),
        )
        .subscribe()
      await waitForDrained(events, topic, group, { timeoutMs: 30_000 })
      sub.unsubscribe()
      expect(await dlqCount(events, topic)).toBe(0)
      expect(counter.runs.size).toBe(60)
      expect(counter.total()).toBe(60)
      expect(acks.filter((o) => o !== 'acked')).toEqual([])
      expect(await dlqCount(events, topic)).toBe(0)
    })
  })

  it('handleEach whose in-process retries outlast consumerTimeout (maxRetries: 5): exactly 6 attempts, then one dead letter', async () => {
    const events = managerOn(kind)
    const topic = randomName('row2')
    const group = randomName('g')
    await publishMany(events, topic, 1)
    let attempts = 0
    const outcomes: Outcome[] = []
    const sub = events
      .topic(topic)
      .consume({ group })
      .pipe(
        // Backoffs 50 + 100 + 200 + 400 + 800 ms, far past the 300 ms consumer timeout.
        handleEach(
          () => {
            attempts++
            throw new Error('always fails')
          },
          { retry: { maxRetries: 5, initialDelay: 50, jitter: 0 } },
        ),
      )
      .subscribe(({ outcome }) => outcomes.push(outcome))
    await waitFor(() => outcomes.length > 0, 30_000, 'the outcome')
    await waitForDrained(events, topic, group, { timeoutMs: 10_000 })
    sub.unsubscribe()
    expect(attempts).toBe(6)
    expect(outcomes).toEqual(['dead-lettered'])
    expect(await dlqCount(events, topic)).toBe(1)
  })

  describe('filter (not acking what it drops), distinctUntilChanged, throttleTime, debounceTime, sample, skip, exhaustMap', () => {
    const droppers: [string, () => MonoTypeOperatorFunction<Message>][] = [
      ['filter', () => filter(() => false)],
      ['distinctUntilChanged', () => distinctUntilChanged(() => true)],
      ['throttleTime', () => throttleTime(10_000)],
      ['debounceTime', () => debounceTime(10_000)],
      ['sample', () => sample(new Subject<void>())],
      ['skip', () => skip(1_000)],
      ['exhaustMap', () => exhaustMap((m: Message) => defer(() => sleep(10_000)).pipe(map(() => m)))],
    ]
    it.each(droppers)('%s: what it drops is given back (no delivery counted), not dead-lettered; a consumer that keeps them handles each once', async (_name, dropper) => {
      const events = managerOn(kind)
      const topic = randomName('row3')
      const group = randomName('g')
      await publishMany(events, topic, 20)
      const seen: Message[] = []
      const dropping = events
        .topic(topic)
        // It does not claim (claimInterval 0): what it gave back waits for a consumer that keeps it.
        .consume({ group, maxPendingMessages: 50, claimInterval: 0 })
        .pipe(
          map((m) => (seen.push(m), m)),
          dropper(),
          handleEach(() => undefined),
        )
        .subscribe()
      // Each dropped message is given back once its consumer timeout passes without a start.
      await waitFor(() => seen.length >= 20 && seen.every((m) => m.outcome !== undefined || isWithdrawn(m)), 20_000, 'the dropped messages to be given back')
      dropping.unsubscribe()
      const kept = runCounter()
      const keeping = events
        .topic(topic)
        .consume({ group })
        .pipe(handleEach((m) => kept.run(m)))
        .subscribe()
      await waitForDrained(events, topic, group, { timeoutMs: 20_000 })
      keeping.unsubscribe()
      expect(await dlqCount(events, topic)).toBe(0)
      const firstHandled = seen.filter((m) => m.outcome === 'acked').length
      expect(kept.total() + firstHandled).toBe(20)
      expect([...kept.runs.values()].every((n) => n === 1)).toBe(true)
    })
  })

  it('switchMap(m => defer(…).pipe(ackOnComplete(m))): a cancelled inner gives its message back; none dead-lettered, each handled once in the end', async () => {
    const events = managerOn(kind)
    const topic = randomName('row4')
    const group = randomName('g')
    await publishMany(events, topic, 10)
    const completed = new Set<number>()
    const switching = events
      .topic(topic)
      .consume({ group })
      .pipe(switchMap((m) => defer(() => sleep(50).then(() => completed.add(payloadN(m)))).pipe(ackOnComplete(m))))
      .subscribe()
    await waitFor(() => completed.size > 0, 10_000, 'the last inner to complete')
    await sleep(100)
    switching.unsubscribe()
    const kept = runCounter()
    const keeping = events
      .topic(topic)
      .consume({ group })
      .pipe(handleEach((m) => kept.run(m)))
      .subscribe()
    await waitForDrained(events, topic, group, { timeoutMs: 20_000 })
    keeping.unsubscribe()
    expect(await dlqCount(events, topic)).toBe(0)
    expect(kept.runs.size + completed.size).toBeGreaterThanOrEqual(10)
    expect([...kept.runs.values()].every((n) => n === 1)).toBe(true)
  })

  it('retry({ delay }) on the whole pipeline after a throwing map: no dead consumers, each good message handled once', async () => {
    const events = managerOn(kind)
    const topic = randomName('row6')
    const group = randomName('g')
    await publishMany(events, topic, 6)
    let failures = 0
    const handled = runCounter()
    const sub = events
      .topic(topic)
      .consume({ group })
      .pipe(
        map((m) => {
          if (payloadN(m) === 0 && failures++ < 3) throw new Error('poison in map')
          return m
        }),
        retry({ delay: 50 }),
        handleEach((m) => handled.run(m)),
      )
      .subscribe()
    await waitForDrained(events, topic, group, { timeoutMs: 20_000 })
    sub.unsubscribe()
    expect(handled.runs.size).toBe(6)
    expect([...handled.runs.values()].every((n) => n === 1)).toBe(true)
    expect((await events.backend.consumers(topic, group)).length).toBe(1)
    expect(await dlqCount(events, topic)).toBe(0)
  })

  it("the README's orderedBy(key, n, m => apply(m)) with one failing apply: the subscription lives on for every key", async () => {
    const events = managerOn(kind)
    const topic = randomName('row7')
    const group = randomName('g')
    await publishMany(events, topic, 12)
    const applied = runCounter()
    let failedOnce = false
    let errored = false
    const sub = events
      .topic(topic)
      .consume({ group })
      .pipe(
        orderedBy(
          (m) => String(payloadN(m) % 3),
          2,
          async (m) => {
            if (payloadN(m) === 4 && !failedOnce) {
              failedOnce = true
              throw new Error('apply failed')
            }
            applied.run(m)
            await m.ack()
          },
        ),
      )
      .subscribe({ error: () => (errored = true) })
    await waitForDrained(events, topic, group, { timeoutMs: 20_000 })
    sub.unsubscribe()
    expect(errored).toBe(false)
    expect(applied.runs.size).toBe(12)
    expect(await dlqCount(events, topic)).toBe(0)
  })

  it('events.close() with live pipelines: consume() completes, lastValueFrom(pipeline) settles', async () => {
    const events = managerOn(kind)
    const topic = randomName('row8')
    const group = randomName('g')
    await publishMany(events, topic, 3)
    const outcomes: Handled[] = []
    const done = lastValueFrom(
      events
        .topic(topic)
        .consume({ group })
        .pipe(handleEach(() => undefined)),
      { defaultValue: undefined },
    ).then(() => 'completed')
    const counted = events
      .topic(topic)
      .consume({ group: randomName('g2') })
      .pipe(handleEach((m) => void outcomes.push({ message: m, outcome: 'acked' })))
    const second = lastValueFrom(counted, { defaultValue: undefined }).then(() => 'completed')
    await waitFor(() => outcomes.length === 3, 10_000, 'the second group to handle all three')
    await events.close()
    expect(await done).toBe('completed')
    expect(await second).toBe('completed')
  })

  describe('handleEach(…) then takeUntil(stop$), and takeUntil(stop$) then handleEach(…)', () => {
    it('takeUntil before handleEach: the two running handlers finish, their outcomes are emitted, then it completes', async () => {
      const events = managerOn(kind)
      const topic = randomName('row9')
      const group = randomName('g')
      await publishMany(events, topic, 2)
      const stop = new Subject<void>()
      let running = 0
      const outcomes: Outcome[] = []
      const done = lastValueFrom(
        events
          .topic(topic)
          .consume({ group })
          .pipe(
            takeUntil(stop),
            handleEach(
              async () => {
                running++
                await sleep(200)
              },
              { concurrency: 2 },
            ),
            map(({ outcome }) => outcomes.push(outcome)),
          ),
        { defaultValue: 0 },
      )
      await waitFor(() => running === 2, 10_000, 'both handlers to run')
      stop.next()
      await done
      expect(outcomes).toEqual(['acked', 'acked'])
    })

    it('takeUntil after handleEach: it completes at once; the running handlers still settle their messages', async () => {
      const events = managerOn(kind)
      const topic = randomName('row9b')
      const group = randomName('g')
      await publishMany(events, topic, 2)
      const stop = new Subject<void>()
      let running = 0
      let finished = 0
      const outcomes: Outcome[] = []
      const done = lastValueFrom(
        events
          .topic(topic)
          .consume({ group })
          .pipe(
            handleEach(
              async () => {
                running++
                await sleep(200)
                finished++
              },
              { concurrency: 2 },
            ),
            takeUntil(stop),
            map(({ outcome }) => outcomes.push(outcome)),
          ),
        { defaultValue: 0 },
      )
      await waitFor(() => running === 2, 10_000, 'both handlers to run')
      stop.next()
      await done
      expect(finished).toBe(0)
      expect(outcomes).toEqual([])
      await waitForDrained(events, topic, group, { timeoutMs: 10_000 })
      expect(finished).toBe(2)
    })
  })

  it('for await over a topic (messages()): each event handled once by one loop body, nothing dead-lettered; break gives the rest back at once', async () => {
    const events = managerOn(kind)
    const topic = randomName('row11')
    const group = randomName('g')
    await publishMany(events, topic, 20)
    const bodies = runCounter()
    for await (const msg of events.topic(topic).messages({ group, maxPendingMessages: 50 })) {
      bodies.run(msg)
      await sleep(20)
      expect(await msg.ack()).toBe('acked')
      if (bodies.runs.size === 20) break
    }
    expect(bodies.total()).toBe(20)
    expect(await dlqCount(events, topic)).toBe(0)

    const rest = randomName('row11-rest')
    await publishMany(events, rest, 10)
    let taken = 0
    for await (const msg of events.topic(rest).messages({ group, batchSize: 10 })) {
      await msg.ack()
      if (++taken === 3) break
    }
    const others = new Map<number, number>()
    const other = events
      .topic(rest)
      .consume({ group })
      .subscribe((m) => {
        others.set(payloadN(m), m.deliveryCount)
        void m.ack()
      })
    await waitFor(() => others.size === 7, 10_000, 'the 7 given back to reach another consumer')
    other.unsubscribe()
    expect([...others.values()].every((count) => count === 1)).toBe(true)
  })

  describe('with the defaults, a backlog of 5,000 with short handlers at concurrency 1', () => {
    const variants: [string, (work: (m: Message) => Promise<void>) => (s: Observable<Message>) => Observable<unknown>][] = [
      ['handleEach', (work) => handleEach((m: Message) => work(m))],
      ['mergeMap(…, 1) with msg.begin()', (work) => mergeMap(async (m: Message) => (m.begin() ? work(m).then(() => m.ack()) : undefined), 1)],
      ['concatMap with msg.begin()', (work) => concatMap(async (m: Message) => (m.begin() ? work(m).then(() => m.ack()) : undefined))],
    ]
    it.each(variants)('%s: exactly 5,000 handler runs, 0 dead letters', async (_name, operator) => {
      // Only the consumer timeout is test-sized (300 ms); credit, batch size, retries and claiming are the defaults.
      const events = managerOn(kind, { claimMinIdleTime: 60_000, claimInterval: 30_000 })
      const topic = randomName('backlog')
      const group = randomName('g')
      await publishMany(events, topic, 5_000)
      const counter = runCounter()
      const sub = events
        .topic(topic)
        .consume({ group })
        .pipe(
          operator(async (m) => {
            counter.run(m)
            await sleep(1)
          }),
        )
        .subscribe()
      await waitForDrained(events, topic, group, { timeoutMs: 120_000, intervalMs: 50 })
      sub.unsubscribe()
      expect(counter.runs.size).toBe(5_000)
      expect(counter.total()).toBe(5_000)
      expect(await dlqCount(events, topic)).toBe(0)
    }, 180_000)
  })

  it('filter(() => false) over 10,000 events: all handed back (count unchanged) or settled, none dead-lettered; the lag reaches 0 only through a consumer that keeps them', async () => {
    const events = managerOn(kind)
    const topic = randomName('drop-all')
    const group = randomName('g')
    await publishMany(events, topic, 10_000)
    const seen: Message[] = []
    const dropping = events
      .topic(topic)
      // It does not claim (claimInterval 0), so what it gives back waits for a consumer that keeps it.
      .consume({ group, maxPendingMessages: 10_000, batchSize: 500, claimInterval: 0 })
      .pipe(
        map((m) => (seen.push(m), m)),
        filter(() => false),
      )
      .subscribe()
    await waitFor(() => seen.length >= 10_000 && seen.every((m) => isWithdrawn(m)), 60_000, 'all 10,000 to be given back')
    expect(seen).toHaveLength(10_000)
    dropping.unsubscribe()
    expect(await dlqCount(events, topic)).toBe(0)
    const info = (await events.backend.groups(topic)).find((g) => g.name === group)
    expect(info?.pending).toBe(10_000)
    expect(info?.lag).toBe(0)
    const kept = runCounter()
    const counts = new Set<number>()
    const keeping = events
      .topic(topic)
      .consume({ group })
      .pipe(
        handleEach((m) => {
          kept.run(m)
          counts.add(m.deliveryCount)
        }),
      )
      .subscribe()
    await waitForDrained(events, topic, group, { timeoutMs: 120_000, intervalMs: 50 })
    keeping.unsubscribe()
    expect(kept.runs.size).toBe(10_000)
    expect(kept.total()).toBe(10_000)
    expect([...counts]).toEqual([1])
    expect(await dlqCount(events, topic)).toBe(0)
  }, 180_000)

  it('filterMessages(() => false) over the same: every event settled at once (acked), none given back or dead-lettered', async () => {
    const events = managerOn(kind)
    const topic = randomName('drop-ack')
    const group = randomName('g')
    await publishMany(events, topic, 2_000)
    const sub = events
      .topic(topic)
      .consume({ group })
      .pipe(filterMessages(() => false))
      .subscribe()
    await waitForDrained(events, topic, group, { timeoutMs: 60_000 })
    sub.unsubscribe()
    expect(await dlqCount(events, topic)).toBe(0)
  }, 120_000)
})

