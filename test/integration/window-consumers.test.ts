/**
 * Credit and consumers with windows and joins on Redis (issue 12, items 5 and 12):
 * a join fed from one subscription through share() and two filters does not
 * deadlock with a small credit and no option set; two consumers of one group
 * splitting a key's window are reported with a process warning.
 */
import { filter, share, tap, type Observable } from 'rxjs'
import { afterEach, describe, expect, it } from 'vitest'
import { newEvent, type EventManager, type Message } from '../../src/index.js'
import { joinWithin, windowTumbling, type JoinedPair, type Window } from '../../operators/index.js'
import { operatorStateStore } from '../../src/shared-settlement.js'
import { randomName } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

const BASE = 1_700_000_040_000

const stop: (() => void)[] = []
afterEach(() => {
  for (const s of stop.splice(0)) s()
})

describe('a join fed from one subscription', () => {
  it('does not deadlock when both sides draw on one small credit (share + filter, keys never match)', async () => {
    const events = testEvents()
    const topic = randomName('one-sub-join')
    const group = randomName('g')
    await events.publishBatch(
      topic,
      Array.from({ length: 20 }, (_, i) => newEvent(i % 2 === 0 ? 'order' : 'payment', { key: `k${i}` }, { timestamp: BASE + i * 1_000 })),
    )
    const source = events.topic(topic).consume({ group, maxPendingMessages: 4, batchSize: 2, drainTimeout: 50 }).pipe(share())
    const results: JoinedPair<Message, Message | undefined>[] = []
    const key = (m: Message): string => (m.event.payload as { key: string }).key
    const subscription = source
      .pipe(
        filter((m) => m.event.name === 'order'),
        joinWithin(source.pipe(filter((m) => m.event.name === 'payment')), { leftKey: key, rightKey: key, within: 60_000, type: 'left' }),
      )
      .subscribe((pair) => {
        results.push(pair)
        void pair.ack()
      })
    stop.push(() => subscription.unsubscribe())
    // Every order comes out unmatched (the credit guard expires the oldest buffered event first), so none is stuck.
    await waitFor(() => results.length >= 7, 10_000, 'the orders to come out though the credit is 4')
    expect(results.every((pair) => pair.right === undefined)).toBe(true)
  })
})

describe('two consumers of one group on one key', () => {
  it('each emits part of the window, and the operator warns that per-key windows need one consumer per key', async () => {
    const warnings: string[] = []
    const onWarning = (warning: Error & { code?: string }): void => {
      if (warning.code === 'RX_REDIS_STREAMS_SPLIT_WINDOW') warnings.push(warning.message)
    }
    process.on('warning', onWarning)
    stop.push(() => process.off('warning', onWarning))
    const events = testEvents()
    const topic = randomName('split')
    const group = randomName('g')
    const consume = (manager: EventManager, consumer: string): Observable<Message> =>
      manager
        .topic(topic)
        .consume({ group, consumer, batchSize: 2, maxPendingMessages: 10, drainTimeout: 50 })
        .pipe(
          // the store the engine is to put on its messages (operatorStateStore)
          tap((m) => {
            if (!(operatorStateStore in m)) Object.defineProperty(m, operatorStateStore, { value: manager.backend })
          }),
        )
    const windows: Window<Message>[] = []
    for (const consumer of ['c1', 'c2']) {
      const subscription = consume(events, consumer)
        .pipe(windowTumbling(1_000, { key: (m) => m.event.headers['user'] ?? '', idleTimeout: 100 }))
        .subscribe((w) => {
          windows.push(w)
          void w.ack()
        })
      stop.push(() => subscription.unsubscribe())
    }
    // Both read before the events come (a consumer is listed once it sent a read): a consumer that starts late
    // would find the other one had taken all 20, 10 at a time.
    const listed = async (): Promise<number> => (await events.stats(topic)).topics[topic]?.groups[group]?.consumers.length ?? 0
    await waitFor(async () => (await listed()) === 2, 10_000, 'both consumers to read')
    await events.publishBatch(
      topic,
      Array.from({ length: 20 }, (_, i) => newEvent('click', {}, { timestamp: BASE + i, headers: { user: 'u1' } })),
    )
    // the window closes by the clock once each consumer's source is idle
    const first = (): Window<Message>[] => windows.filter((w) => w.start === BASE)
    await waitFor(() => first().reduce((n, w) => n + w.messages.length, 0) === 20, 10_000, 'the window of the 20 events')
    // one window's 20 events, split between the two consumers (each holds at most 10: read-ahead reads ask for 50).
    // None is lost: a consumer whose first message is behind the watermark the other one wrote when it emitted its
    // part does not take it for a replay of that settled part (window-first-delivery.test.ts).
    expect(new Set(first().map((w) => w.messages[0]?.consumer)).size).toBe(2)
    await waitFor(() => warnings.length > 0, 5_000, 'the split-window warning')
    expect(warnings[0]).toMatch(/one consumer per key/)
  })
})
