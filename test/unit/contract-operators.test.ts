/**
 * The operator side of the message contract (issue #10), on test messages:
 * begin() before every attempt, holds between retries, the signal, give-back
 * on cancellation, every settleable accepted (#12 item 1), virtual time.
 */
import { concatMap, defer, delay, from, lastValueFrom, map, of, Subject, switchMap, takeUntil, throwError, timer, toArray, type Observable } from 'rxjs'
import { TestScheduler } from 'rxjs/testing'
import { describe, expect, it } from 'vitest'
import { ackOnComplete, filterMessages, handleEach, matchPattern, orderedBy, retryWithBackoff, toDeadLetter, type Handled } from '../../operators/index.js'
import type { Message } from '../../src/consumer/message.js'
import { DecodeError } from '../../src/errors.js'
import type { NackOptions, Outcome, Settleable } from '../../src/settle.js'
import { CompositeSettleable, Share } from '../../src/shared-settlement.js'
import { createTestMessage, VirtualClock, type TestMessage } from '../../src/testing.js'

const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms))
const marbles = (): TestScheduler => new TestScheduler((actual, expected) => expect(actual).toEqual(expected))

/** A settleable whose store always fails: settlement calls reject (what the contract forbids the engine to do). */
class FailingStore implements Settleable {
  outcome: Outcome | undefined
  ack(): Promise<Outcome> {
    return Promise.reject(new Error('XACK failed'))
  }
  nack(_error: unknown, _options?: NackOptions): Promise<Outcome> {
    return Promise.reject(new Error('store down'))
  }
  deadLetter(): Promise<Outcome> {
    return Promise.reject(new Error('DLQ move failed'))
  }
}

describe('handleEach follows the message contract', () => {
  it('begins every attempt, holds the message during the backoff, and retries until it succeeds', async () => {
    const msg = createTestMessage('x')
    let calls = 0
    const handled = await lastValueFrom(
      of(msg as Message<string>).pipe(
        handleEach(
          () => {
            calls++
            if (calls < 3) throw new Error('flaky')
          },
          { retry: { initialDelay: 1, jitter: 0 } },
        ),
        toArray(),
      ),
    )
    expect(handled.map((h) => h.outcome)).toEqual(['acked'])
    expect(msg.attempts).toBe(3)
    // Held (timeout paused) before each of the two retries; the next begin() restarts it.
    expect(msg.holds).toEqual([Infinity, Infinity])
  })

  it('never runs a message that begin() refuses (settled, given back), and does not report it', async () => {
    const settled = createTestMessage('settled')
    await settled.ack()
    const givenBack = createTestMessage('given back')
    ;(givenBack as unknown as { [k: symbol]: () => void })[Symbol.for('rx-redis-streams.releaseMessage')]?.()
    const fresh = createTestMessage('fresh')
    const seen: string[] = []
    const handled = await lastValueFrom(
      from([settled, givenBack, fresh] as Message<string>[]).pipe(
        handleEach((m) => void seen.push(m.event.payload)),
        toArray(),
      ),
    )
    expect(givenBack.withdrawn).toBe(true)
    expect(seen).toEqual(['fresh'])
    expect(handled.map((h) => h.message.event.payload)).toEqual(['fresh'])
  })

  it("passes the attempt's signal as the second argument; one-argument handlers keep working", async () => {
    const msg = createTestMessage('x')
    let signal: AbortSignal | undefined
    let attempt = 0
    await lastValueFrom(
      of(msg as Message<string>).pipe(
        handleEach((_m, context) => {
          signal = context.signal
          attempt = context.attempt
        }),
      ),
    )
    expect(signal).toBe(msg.signal)
    expect(attempt).toBe(1)
    const oneArgument = createTestMessage('y')
    await lastValueFrom(of(oneArgument as Message<string>).pipe(handleEach(async (m) => {
      await Promise.resolve(m.event.payload)
    })))
    expect(oneArgument.outcome).toBe('acked')
  })

  it('holds queued messages (a library operator starts what it queues) and begins them when they start', async () => {
    const messages = [createTestMessage(1), createTestMessage(2), createTestMessage(3)]
    await lastValueFrom(from(messages as Message<number>[]).pipe(handleEach(() => tick(1), { concurrency: 1 }), toArray()))
    expect(messages.map((m) => m.holds)).toEqual([[], [Infinity], [Infinity]])
    expect(messages.map((m) => m.attempts)).toEqual([1, 1, 1])
    expect(messages.map((m) => m.outcome)).toEqual(['acked', 'acked', 'acked'])
  })

  it('gives back what it queued when unsubscribed, and lets the running handler settle', async () => {
    const messages = [createTestMessage(1), createTestMessage(2), createTestMessage(3)]
    const source = new Subject<Message<number>>()
    let release: () => void = () => undefined
    const sub = source.pipe(handleEach(() => new Promise<void>((r) => (release = r)))).subscribe()
    for (const m of messages) source.next(m)
    sub.unsubscribe()
    release()
    await tick(5)
    expect(messages.map((m) => m.outcome)).toEqual(['acked', undefined, undefined])
    expect(messages.map((m) => m.withdrawn)).toEqual([false, true, true])
  })
})

describe('handleEach accepts every settleable (#12 item 1)', () => {
  class Batch<T extends Settleable> extends CompositeSettleable {
    constructor(readonly messages: readonly T[]) {
      super(messages.map((m) => new Share(m)))
    }
  }

  it('takes retry defaults from the first constituent that has them and settles every constituent', async () => {
    const a = createTestMessage('a', { retry: { maxRetries: 1, initialDelay: 1 } })
    const b = createTestMessage('b')
    const batch = new Batch([a, b])
    let attempts = 0
    const [handled] = await lastValueFrom(
      of(batch).pipe(
        handleEach(() => {
          attempts++
          throw new Error('always')
        }),
        toArray(),
      ),
    )
    expect(attempts).toBe(2) // maxRetries 1 from the first message, not the default 3
    expect(handled?.outcome).toBe('dead-lettered')
    expect(a.outcome).toBe('dead-lettered')
    expect(b.outcome).toBe('dead-lettered')
  })

  it('a value without any retry defaults uses the documented ones (no TypeError), and acks each constituent', async () => {
    const a = createTestMessage('a')
    const reduced = {
      kind: 'windowResult' as const,
      value: 1,
      window: new Batch([a]),
      get outcome() {
        return this.window.outcome
      },
      ack() {
        return this.window.ack()
      },
      nack(error: unknown) {
        return this.window.nack(error)
      },
      deadLetter(reason: unknown) {
        return this.window.deadLetter(reason)
      },
    }
    const handled = await lastValueFrom(of(reduced).pipe(handleEach((w) => {
      expect(w.value).toBe(1)
    }), toArray()))
    expect(handled.map((h) => h.outcome)).toEqual(['acked'])
    expect(a.outcome).toBe('acked')
  })

  it('ackOnComplete and toDeadLetter settle each constituent of a composite', async () => {
    const a = createTestMessage('a')
    const b = createTestMessage('b')
    await lastValueFrom(defer(() => of(1)).pipe(ackOnComplete(new Batch([a])) ), { defaultValue: undefined })
    await lastValueFrom(throwError(() => new Error('x')).pipe(toDeadLetter(new Batch([b]))), { defaultValue: undefined })
    expect([a.outcome, b.outcome]).toEqual(['acked', 'dead-lettered'])
  })
})

describe('virtual time', () => {
  it('marble-tests handleEach with Observable handlers and in-process retries under TestScheduler', () => {
    const scheduler = marbles()
    scheduler.run(({ cold, expectObservable }) => {
      const ok = createTestMessage('ok')
      const flaky = createTestMessage('flaky')
      let flakyRuns = 0
      const outcomes = cold<Message<string>>('a-b|', { a: ok, b: flaky }).pipe(
        handleEach(
          (m) =>
            m.event.payload === 'ok'
              ? timer(5)
              : defer(() => (++flakyRuns < 3 ? throwError(() => new Error('flaky')) : of('done').pipe(delay(1)))),
          { concurrency: 2, retry: { initialDelay: 10 }, scheduler },
        ),
        map((h) => `${h.message.event.payload}:${h.outcome}`),
      )
      // ok: done at 5. flaky: fails at 2, retried at 2 + 10 and 12 + 20 (no jitter under a scheduler), succeeds at 33.
      expectObservable(outcomes).toBe('5ms a 27ms (b|)', { a: 'ok:acked', b: 'flaky:acked' })
    })
  })

  it('plain-value handlers run synchronously under TestScheduler', () => {
    const scheduler = marbles()
    scheduler.run(({ cold, expectObservable }) => {
      const values = cold<Message<number>>('a-b|', { a: createTestMessage(1), b: createTestMessage(2) })
      expectObservable(values.pipe(handleEach((m) => {
        expect(m.event.payload).toBeGreaterThan(0)
      }, { scheduler }), map((h) => h.outcome))).toBe('a-b|', { a: 'acked', b: 'acked' })
    })
  })

  it('takeUntil before handleEach: the running handlers finish and their outcomes are emitted, then it completes', () => {
    const scheduler = marbles()
    scheduler.run(({ cold, hot, expectObservable }) => {
      const [a, b, c] = [createTestMessage('a'), createTestMessage('b'), createTestMessage('c')] as const
      const stop = hot('---s')
      const source = cold<Message<string>>('abc', { a, b, c })
      const pipeline = source.pipe(
        takeUntil(stop),
        handleEach(() => timer(10), { concurrency: 3, scheduler }),
        map((h) => h.message.event.payload),
      )
      expectObservable(pipeline).toBe('10ms ab(c|)')
    })
  })

  it('takeUntil after handleEach: it completes at once; the running handlers still settle their messages', () => {
    const scheduler = marbles()
    const [a, b, c] = [createTestMessage('a'), createTestMessage('b'), createTestMessage('c')] as const
      const messages = [a, b, c]
    scheduler.run(({ cold, hot, expectObservable }) => {
      const stop = hot('---s')
      const source = cold<Message<string>>('abc', { a, b, c })
      const pipeline = source.pipe(
        handleEach(() => timer(10), { concurrency: 3, scheduler }),
        takeUntil(stop),
      )
      expectObservable(pipeline).toBe('---|')
    })
    expect(messages.map((m) => m.outcome)).toEqual(['acked', 'acked', 'acked'])
  })

  it('a Promise handler runs under the VirtualClock: retries and handler sleeps take no real time', async () => {
    const clock = new VirtualClock()
    const msg = createTestMessage('x')
    let runs = 0
    const outcomes: string[] = []
    of(msg as Message<string>)
      .pipe(
        handleEach(
          async () => {
            runs++
            await clock.sleep(1_000)
            if (runs < 3) throw new Error('flaky')
          },
          { retry: { initialDelay: 10_000 }, scheduler: clock },
        ),
      )
      .subscribe((h) => outcomes.push(`${clock.now()}:${h.outcome}`))
    // 1 s, backoff 10 s, 1 s, backoff 20 s, 1 s.
    await clock.advance(32_999)
    expect(outcomes).toEqual([])
    await clock.advance(1)
    expect(outcomes).toEqual(['33000:acked'])
    expect(runs).toBe(3)
  })
})

describe('ackOnComplete, filterMessages, matchPattern', () => {
  it('switchMap(m => defer(…).pipe(ackOnComplete(m))): a cancelled inner gives its message back instead of leaving it to time out', () => {
    const scheduler = marbles()
    const [a, b, c] = [createTestMessage('a'), createTestMessage('b'), createTestMessage('c')] as const
      const messages = [a, b, c]
    scheduler.run(({ cold, expectObservable }) => {
      const source = cold<TestMessage<string>>('ab 20ms c|', { a, b, c })
      expectObservable(source.pipe(switchMap((m) => timer(5).pipe(ackOnComplete(m))))).toBe('6ms x 20ms (x|)', { x: 0 })
    })
    expect(messages.map((m) => m.outcome)).toEqual([undefined, 'acked', 'acked'])
    expect(messages.map((m) => m.withdrawn)).toEqual([true, false, false])
    expect(messages.map((m) => m.attempts)).toEqual([1, 1, 1])
  })

  it('ackOnComplete skips a message begin() refuses: the work is not run', async () => {
    const msg = createTestMessage('x')
    await msg.deadLetter('poison')
    let ran = false
    await lastValueFrom(defer(() => ((ran = true), of(1))).pipe(ackOnComplete(msg)), { defaultValue: undefined })
    expect(ran).toBe(false)
    expect(msg.settlements.map((s) => s.kind)).toEqual(['deadLetter'])
  })

  it('filterMessages settles (acks) what it drops; a plain filter would leave it to time out', async () => {
    const messages = [1, 2, 3, 4].map((n) => createTestMessage(n))
    const kept = await lastValueFrom(from(messages).pipe(filterMessages((m) => m.event.payload % 2 === 0), toArray()))
    expect(kept.map((m) => m.event.payload)).toEqual([2, 4])
    expect(messages.map((m) => m.outcome)).toEqual(['acked', undefined, 'acked', undefined])
    const left = [createTestMessage(1)]
    await lastValueFrom(from(left).pipe(filterMessages(() => false, { onDrop: 'leave' }), toArray()))
    expect(left[0]?.outcome).toBeUndefined()
  })

  it('matchPattern keeps acking what it drops', async () => {
    const messages = [createTestMessage(1, { name: 'user.signup' }), createTestMessage(2, { name: 'order.placed' })]
    const kept = await lastValueFrom(from(messages as Message<number>[]).pipe(matchPattern({ eventName: 'user.*' }), toArray()))
    expect(kept).toHaveLength(1)
    expect(messages.map((m) => m.outcome)).toEqual([undefined, 'acked'])
  })
})

describe('retryWithBackoff({ message }) inside a per-message pipeline', () => {
  it('pauses the timeout during each backoff and begins each retry, so the timeout bounds each attempt', async () => {
    const msg = createTestMessage('x')
    let runs = 0
    const work = defer(() => (++runs < 3 ? throwError(() => new Error('flaky')) : of('done')))
    await lastValueFrom(work.pipe(retryWithBackoff({ initialDelay: 1, jitter: 0, message: msg }), toDeadLetter(msg), ackOnComplete(msg)), { defaultValue: undefined })
    expect(runs).toBe(3)
    expect(msg.attempts).toBe(3) // ackOnComplete's begin(), then one per retry
    expect(msg.holds).toEqual([Infinity, Infinity])
    expect(msg.outcome).toBe('acked')
  })

  it('stops retrying a message that begin() refuses (given back during the backoff)', async () => {
    const msg = createTestMessage('x')
    let runs = 0
    const work = defer(() => {
      runs++
      ;(msg as unknown as Record<symbol, () => void>)[Symbol.for('rx-redis-streams.releaseMessage')]?.()
      return throwError(() => new Error('flaky'))
    })
    await lastValueFrom(work.pipe(retryWithBackoff({ initialDelay: 1, message: msg }), toDeadLetter(msg), ackOnComplete(msg)), { defaultValue: undefined })
    expect(runs).toBe(1)
    expect(msg.outcome).toBeUndefined()
    expect(msg.withdrawn).toBe(true)
  })
})

describe('orderedBy settles what it handles', () => {
  it("the README's orderedBy with one failing apply: the subscription lives on, for every key; the failure is nacked", async () => {
    const messages = ['k1', 'k2', 'k1', 'k2', 'k1'].map((key, i) => createTestMessage(i, { headers: { key } }))
    const order: number[] = []
    let completed = false
    const results = await lastValueFrom(
      from(messages as Message<number>[]).pipe(
        orderedBy(
          (m) => m.event.headers['key'] ?? '',
          2,
          async (m) => {
            await tick(1)
            order.push(m.event.payload)
            if (m.event.payload === 1) throw new Error('apply failed')
            return m.event.payload
          },
        ),
        toArray(),
      ),
    ).finally(() => (completed = true))
    expect(completed).toBe(true)
    expect(results.sort()).toEqual([0, 2, 3, 4])
    expect(messages.map((m) => m.outcome)).toEqual(['acked', 'nacked', 'acked', 'acked', 'acked'])
    // Per key, in arrival order.
    expect(order.filter((n) => n % 2 === 0)).toEqual([0, 2, 4])
    expect(messages.map((m) => m.attempts)).toEqual([1, 1, 1, 1, 1])
  })

  it('dead-letters bad input, leaves what the project settled itself, and begins each message', async () => {
    const bad = createTestMessage(1)
    const selfAcked = createTestMessage(2)
    await lastValueFrom(
      from([bad, selfAcked] as Message<number>[]).pipe(
        orderedBy(
          () => 'one key',
          1,
          (m) => (m.event.payload === 1 ? throwError(() => new DecodeError('invalid_payload', 'bad')) : from(m.ack())),
        ),
        toArray(),
      ),
    )
    expect(bad.outcome).toBe('dead-lettered')
    expect(selfAcked.settlements.map((s) => s.kind)).toEqual(['ack'])
  })
})

describe('settlement is safe to fire and forget', () => {
  it('void m.deadLetter() when the store fails: no operator turns it into an unhandled rejection', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const store = (): FailingStore => new FailingStore()
      await lastValueFrom(of(store()).pipe(handleEach(() => undefined)), { defaultValue: undefined })
      await lastValueFrom(of(store()).pipe(handleEach(() => Promise.reject(new DecodeError('invalid_payload', 'x')))), { defaultValue: undefined })
      await lastValueFrom(of(store()).pipe(handleEach(() => Promise.reject(new Error('x')), { retry: false })), { defaultValue: undefined })
      await lastValueFrom(throwError(() => new Error('x')).pipe(toDeadLetter(store())), { defaultValue: undefined })
      await lastValueFrom(throwError(() => new Error('x')).pipe(ackOnComplete(store())), { defaultValue: undefined })
      await lastValueFrom(of(1).pipe(ackOnComplete(store())), { defaultValue: undefined })
      await lastValueFrom(of(store()).pipe(filterMessages(() => false)), { defaultValue: undefined })
      await lastValueFrom(of(store()).pipe(orderedBy(() => '', 1, () => throwError(() => new Error('x')))), { defaultValue: undefined })
      await tick(20)
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  it("handleEach reports a store failure as 'failed' (the message stays pending), and the next message still runs", async () => {
    const handled: Handled<unknown, Settleable>[] = []
    const ok = createTestMessage('ok')
    await lastValueFrom(from([new FailingStore(), ok] as Settleable[]).pipe(handleEach(() => undefined), toArray())).then((h) => handled.push(...h))
    expect(handled.map((h) => h.outcome)).toEqual(['failed', 'acked'])
  })
})

// Type-level: the handler of a window pipeline is typed by the source, and one-argument message handlers still fit.
export const typeChecks = (windows$: Observable<CompositeSettleable & { readonly key: string }>, messages$: Observable<Message<{ id: number }>>): unknown[] => [
  windows$.pipe(handleEach((w) => [w.key])),
  messages$.pipe(handleEach((m) => [m.event.payload.id])),
  messages$.pipe(concatMap((m) => of(m)), handleEach((m, { signal }) => [signal.aborted, m.event.payload.id])),
]
