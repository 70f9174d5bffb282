/**
 * The engine side of the pipeline contract (issue 10) on the memory backend:
 * timeout from begin(), give-back without a delivery counted, a closed
 * subscriber gets nothing more, safe re-subscription, lifecycle through the
 * Observable, settlement that never rejects.
 */
import { firstValueFrom, lastValueFrom, map, retry, take } from 'rxjs'
import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import type { GroupReader, StreamBackend } from '../../src/backend/types.js'
import { declareDemand } from '../../src/consumer/message.js'
import { BackendError, ClosedError } from '../../src/errors.js'
import { createEventManager, newEvent, type Message } from '../../src/index.js'
import { name, sleep, trackManagers, waitFor } from '../support/engine.js'

const manager = trackManagers()

/** Port faults switched on and off by the test. */
function faulty(inner: MemoryBackend) {
  const faults = { ack: false, deadLetter: false, reads: false, readError: (): Error => new BackendError('connection lost') }
  const backend = new Proxy(inner, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver)
      if (typeof value !== 'function') return value
      const fn = value as (...args: unknown[]) => unknown
      if (prop === 'createReader') {
        return () => {
          const reader = fn.call(target) as GroupReader
          return {
            read: async (...args: Parameters<GroupReader['read']>) => {
              if (faults.reads) {
                await sleep(2)
                throw faults.readError()
              }
              return reader.read(...args)
            },
            close: () => reader.close(),
          } satisfies GroupReader
        }
      }
      if ((prop === 'ack' && faults.ack) || (prop === 'deadLetter' && faults.deadLetter)) {
        return () => Promise.reject(new BackendError('store down'))
      }
      return fn.bind(target)
    },
  }) as StreamBackend
  return { backend, faults }
}

async function pendingOf(backend: MemoryBackend, topic: string, group: string): Promise<number> {
  const groups = await backend.groups(topic)
  return groups.find((g) => g.name === group)?.pending ?? 0
}

describe('time and credit follow handling (issue 10, items 1-2)', () => {
  it('a message emitted and never started is given back without a delivery counted, warned about once, and dead-lettered never_started after maxGiveBacks', async () => {
    const inner = new MemoryBackend()
    const lines: string[] = []
    const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) })
    const events = manager(inner, { logger })
    const topic = name('dropped')
    await events.publish(topic, newEvent('dropped', 0))
    const counts: number[] = []
    events
      .topic(topic)
      .consume({ group: 'g', consumerTimeout: 60, claimInterval: 20, claimMinIdleTime: 40, maxGiveBacks: 3, drainTimeout: 10 })
      // As a filter that drops everything: emitted, never started, never settled.
      .subscribe((m) => void counts.push(m.deliveryCount))
    await waitFor(async () => (await inner.dlqCount(topic)) === 1, 'the never_started dead letter')
    // Every delivery carried count 1: giving back counted nothing.
    expect(counts).toEqual([1, 1, 1])
    const [letter] = await inner.dlqList(topic, { count: 1 })
    const f = letter?.fields ?? []
    expect(f[f.indexOf('dlq_error') + 1]).toMatch(/^never_started/)
    expect(f[f.indexOf('dlq_handler_runs') + 1]).toBe('0')
    const warnings = lines.filter((l) => l.includes('not started within consumerTimeout'))
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toMatch(/filterMessages/)
  })

  it('the timeout counts from begin(); a given-back message refuses begin() and its ack resolves withdrawn', async () => {
    const inner = new MemoryBackend()
    const events = manager(inner)
    const topic = name('begin')
    await events.publish(topic, newEvent('e', 0))
    const seen: Message[] = []
    events
      .topic(topic)
      .consume({ group: 'g', consumerTimeout: 80, claimInterval: 0 })
      .subscribe((m) => void seen.push(m))
    await waitFor(() => seen.length === 1, 'the delivery')
    const m = seen[0] as Message
    await sleep(200)
    expect(m.begin()).toBe(false)
    expect(await m.ack()).toBe('withdrawn')
    expect(m.outcome).toBe('withdrawn')
    // Still pending in the group (given back, not acked), with its count unchanged by the give-back.
    expect(await pendingOf(inner, topic, 'g')).toBe(1)
  })

  it('a started message held by holdUntil(Infinity) (a backoff) is not timed out; begin() restarts its timeout', async () => {
    const events = manager(new MemoryBackend())
    const topic = name('hold')
    await events.publish(topic, newEvent('e', 0))
    const seen: Message[] = []
    events
      .topic(topic)
      .consume({ group: 'g', consumerTimeout: 60 })
      .subscribe((m) => {
        m.begin()
        m.holdUntil(Number.POSITIVE_INFINITY)
        seen.push(m)
      })
    await waitFor(() => seen.length === 1, 'the delivery')
    await sleep(250)
    const m = seen[0] as Message
    expect(m.signal.aborted).toBe(false)
    expect(m.begin()).toBe(true)
    expect(await m.ack()).toBe('acked')
    expect(seen).toHaveLength(1)
  })

  it('a timed-out attempt aborts its signal, and its redelivered copy is not emitted until the timed-out run returned', async () => {
    const events = manager(new MemoryBackend(), { retryBackoff: 10 })
    const topic = name('late')
    await events.publish(topic, newEvent('slow', 0))
    const copies: Message[] = []
    events
      .topic(topic)
      .consume({ group: 'g', consumerTimeout: 300 })
      .subscribe((m) => {
        m.begin()
        copies.push(m)
      })
    await waitFor(() => copies.length === 1, 'the first copy')
    const first = copies[0] as Message
    await waitFor(() => first.signal.aborted, 'the timeout')
    expect(first.outcome).toBe('nacked')
    await sleep(100)
    // Still running here (no settlement call yet): no second copy beside it.
    expect(copies).toHaveLength(1)
    expect(await first.ack()).toBe('withdrawn')
    await waitFor(() => copies.length === 2, 'the redelivered copy')
    expect(copies[1]?.deliveryCount).toBe(2)
  })

  it('unless maxPendingMessages is set, the credit is 4 x batchSize, or the declared demand plus 8 x max(batchSize, 50)', async () => {
    const events = manager(new MemoryBackend())
    const topic = name('demand')
    await events.publish(topic, newEvent('e', 0))
    const seen: Message[] = []
    events
      .topic(topic)
      .consume({ group: 'g', batchSize: 5 })
      .subscribe((m) => void seen.push(m))
    await waitFor(() => seen.length === 1, 'the delivery')
    expect(events.internals.subscriptions()[0]?.credit).toBe(20)
    const holder = {}
    declareDemand(seen[0], holder, 7)
    declareDemand(seen[0]?.withPayload('x'), holder, 8)
    // 8 (the last declaration of a holder wins) + 8 × max(5, 50).
    expect(events.internals.subscriptions()[0]?.credit).toBe(408)
    events.topic(topic).consume({ group: 'g2', maxPendingMessages: 3 }).subscribe((m) => declareDemand(m, holder, 50))
    await waitFor(() => events.internals.subscriptions().length === 2, 'the second subscription')
    await sleep(20)
    expect(events.internals.subscriptions().find((s) => s.group === 'g2')?.credit).toBe(3)
  })
})

describe('ordinary RxJS queues (issue 10, table row 1)', () => {
  for (const how of ['mergeMap(…, 2)', 'concatMap'] as const) {
    it(`${how} with begin() as its first step and a credit larger than its concurrency: each message handled once, every ack acked, nothing dead-lettered`, async () => {
      const inner = new MemoryBackend()
      const events = manager(inner)
      const topic = name('row1')
      await events.publishBatch(topic, Array.from({ length: 100 }, (_, i) => newEvent('job', i)))
      const runs = new Map<number, number>()
      const outcomes: string[] = []
      const work = async (m: Message): Promise<void> => {
        if (!m.begin()) return
        const n = m.event.payload as number
        runs.set(n, (runs.get(n) ?? 0) + 1)
        await sleep(20)
        outcomes.push(await m.ack())
      }
      const { concatMap, mergeMap } = await import('rxjs')
      events
        .topic(topic)
        // The tail of the queue waits longer than consumerTimeout (60 × 20 ms / 2 > 500 ms); each attempt takes 20 ms.
        .consume({ group: 'g', consumerTimeout: 500, maxPendingMessages: 60, claimInterval: 50, claimMinIdleTime: 300 })
        .pipe(how === 'concatMap' ? concatMap(work) : mergeMap(work, 2))
        .subscribe()
      await waitFor(() => runs.size === 100, 'every job run', 20_000).catch(async (e: unknown) => {
        throw new Error(`${String(e)}: runs ${String(runs.size)} outcomes ${String(outcomes.length)} status ${JSON.stringify(events.internals.subscriptions())} pending ${String(await pendingOf(inner, topic, 'g'))} dlq ${String(await inner.dlqCount(topic))}`)
      })
      await waitFor(async () => (await pendingOf(inner, topic, 'g')) === 0, 'nothing pending', 10_000)
      expect([...runs.values()].every((r) => r === 1)).toBe(true)
      expect(outcomes.filter((o) => o !== 'acked')).toEqual([])
      expect(await inner.dlqCount(topic)).toBe(0)
    }, 40_000)
  }
})

describe('a closed subscriber gets nothing more (issue 10, item 3)', () => {
  it('take(1): the unemitted rest of the batch is given back at once with its count, the taken message keeps its lease and acks', async () => {
    const inner = new MemoryBackend()
    const events = manager(inner)
    const topic = name('take')
    await events.publishBatch(topic, Array.from({ length: 10 }, (_, i) => newEvent('e', i)))
    const first = await firstValueFrom(events.topic(topic).consume({ group: 'g', consumer: 'one', claimMinIdleTime: 60_000 }).pipe(take(1)))
    expect(first.event.payload).toBe(0)
    expect(first.begin()).toBe(true)
    // Another consumer takes the 9 others at once: their idle time was set past claimMinIdleTime, their counts kept.
    await sleep(20)
    const claimed = await inner.claimIdle(topic, 'g', 'two', { minIdleMs: 60_000, cursor: '0-0', count: 100 })
    expect(claimed.entries.map((e) => e.deliveryCount)).toEqual(Array.from({ length: 9 }, () => 1))
    expect(await first.ack()).toBe('acked')
  })
})

describe('re-subscription (issue 10, item 4)', () => {
  it('a second live subscription with a consumer name in use fails with ConsumerNameInUseError', () => {
    const events = manager(new MemoryBackend())
    const topic = name('name')
    events.topic(topic).consume({ group: 'g', consumer: 'same' }).subscribe()
    let failure: unknown
    events
      .topic(topic)
      .consume({ group: 'g', consumer: 'same' })
      .subscribe({ error: (e: unknown) => (failure = e) })
    expect((failure as Error | undefined)?.name).toBe('ConsumerNameInUseError')
  })

  it('retry() on a pipeline reuses the consumer name, adds no consumer, and converges', async () => {
    const inner = new MemoryBackend()
    const events = manager(inner)
    const topic = name('retry')
    await events.publishBatch(topic, Array.from({ length: 5 }, (_, i) => newEvent('e', i)))
    let thrown = 0
    const handled: number[] = []
    events
      .topic(topic)
      .consume({ group: 'g' })
      .pipe(
        map((m) => {
          if (m.event.payload === 2 && thrown++ < 2) throw new Error('transient')
          return m
        }),
        retry(),
      )
      .subscribe((m) => {
        handled.push(m.event.payload as number)
        void m.ack()
      })
    await waitFor(() => handled.includes(4) && handled.includes(2), 'all handled after the retries')
    const consumers = await inner.consumers(topic, 'g')
    expect(consumers).toHaveLength(1)
    expect(thrown).toBe(3)
  })
})

describe('lifecycle through the Observable (issue 10, item 5)', () => {
  it('consume() completes after close(): lastValueFrom is the shutdown', async () => {
    const events = createEventManager({ backend: 'memory', env: {} })
    const topic = name('complete')
    await events.publish(topic, newEvent('e', 0))
    const done = lastValueFrom(events.topic(topic).consume({ group: 'g' }).pipe(map((m) => void m.ack())), { defaultValue: undefined })
    await sleep(30)
    await events.close()
    await expect(done).resolves.toBeUndefined()
  })

  it('consume() completes when its signal aborts (stop pulling, drain, flush acks)', async () => {
    const inner = new MemoryBackend()
    const events = manager(inner)
    const topic = name('signal')
    await events.publishBatch(topic, [newEvent('e', 0), newEvent('e', 1)])
    const stop = new AbortController()
    let count = 0
    const done = lastValueFrom(
      events
        .topic(topic)
        .consume({ group: 'g', signal: stop.signal })
        .pipe(
          map((m) => {
            count++
            void m.ack()
          }),
        ),
      { defaultValue: undefined },
    )
    await waitFor(() => count === 2, 'both handled')
    stop.abort()
    await done
    expect(await pendingOf(inner, topic, 'g')).toBe(0)
  })

  it('consume() on a closed manager errors with ClosedError', async () => {
    const events = createEventManager({ backend: 'memory', env: {} })
    await events.close()
    await expect(firstValueFrom(events.topic(name('closed')).consume({ group: 'g' }))).rejects.toBeInstanceOf(ClosedError)
  })

  it('a permanent failure (NOPERM on every read) errors the Observable and shows as errored with the reason', async () => {
    const { backend, faults } = faulty(new MemoryBackend())
    faults.reads = true
    faults.readError = () => new BackendError("NOPERM this user has no permissions to run the 'xreadgroup' command")
    const events = manager(backend)
    let failure: unknown
    events
      .topic(name('noperm'))
      .consume({ group: 'g' })
      .subscribe({ error: (e: unknown) => (failure = e) })
    await waitFor(() => failure !== undefined, 'the error')
    expect(String(failure)).toMatch(/NOPERM/)
    const status = events.internals.subscriptions()[0]
    expect(status?.state).toBe('errored')
    expect(status?.error).toMatch(/NOPERM/)
  })

  it('health states: reconnecting while reads fail, stalled while a read hangs, pulling once a read of new entries succeeds', async () => {
    const inner = new MemoryBackend()
    const { backend, faults } = faulty(inner)
    let hang = false
    const hanging = new Proxy(backend, {
      get(target, prop, receiver) {
        if (prop !== 'createReader') return Reflect.get(target, prop, receiver) as unknown
        return () => {
          const reader = target.createReader()
          return {
            read: (...args: Parameters<GroupReader['read']>) => (hang ? new Promise<never>(() => undefined) : reader.read(...args)),
            close: () => reader.close(),
          } satisfies GroupReader
        }
      },
    })
    const events = manager(hanging)
    const state = (): string | undefined => events.internals.subscriptions()[0]?.state
    faults.reads = true
    events.topic(name('health')).consume({ group: 'g', blockMs: 20, drainTimeout: 0 }).subscribe()
    await waitFor(() => state() === 'reconnecting', 'reconnecting')
    faults.reads = false
    await waitFor(() => state() === 'pulling', 'pulling')
    hang = true
    // A read that does not return within blockMs + 5 s is stalled.
    await waitFor(() => state() === 'stalled', 'stalled', 10_000)
  }, 15_000)

  it('past the drain timeout, a running message is told to stop through its signal (issue 13, item 3)', async () => {
    const events = createEventManager({ backend: 'memory', env: {} })
    const topic = name('drain')
    await events.publish(topic, newEvent('e', 0))
    const seen: Message[] = []
    events
      .topic(topic)
      .consume({ group: 'g', drainTimeout: 30 })
      .subscribe((m) => {
        m.begin()
        seen.push(m)
      })
    await waitFor(() => seen.length === 1, 'the delivery')
    await events.close()
    expect(seen[0]?.signal.aborted).toBe(true)
  })

  it('a stopped consumer that owns no pending entries leaves its group (issue 13, item 7)', async () => {
    const inner = new MemoryBackend()
    const events = manager(inner)
    const topic = name('leave')
    await events.publish(topic, newEvent('e', 0))
    let acked = false
    const sub = events
      .topic(topic)
      .consume({ group: 'g', consumer: 'leaver' })
      .subscribe((m) => {
        void m.ack().then(() => (acked = true))
      })
    await waitFor(() => acked, 'the ack')
    expect((await inner.consumers(topic, 'g')).map((c) => c.name)).toEqual(['leaver'])
    sub.unsubscribe()
    await waitFor(async () => (await inner.consumers(topic, 'g')).length === 0, 'the consumer to leave its group')
  })

  it('no attempt starts after close() resolved, even from a backoff that began before (issue 11, bug 2)', async () => {
    const events = createEventManager({ backend: 'memory', env: {} })
    const topic = name('backoff')
    await events.publish(topic, newEvent('e', 0))
    const attempts: number[] = []
    events
      .topic(topic)
      .consume({ group: 'g', drainTimeout: 20 })
      .subscribe((m) => {
        void (async () => {
          // A hand-written retry loop that follows the contract: begin() before every attempt.
          while (m.begin()) {
            attempts.push(Date.now())
            m.holdUntil(Number.POSITIVE_INFINITY)
            await sleep(60)
          }
        })()
      })
    await waitFor(() => attempts.length === 1, 'the first attempt')
    await events.close()
    const closedAt = Date.now()
    await sleep(200)
    expect(attempts.filter((t) => t >= closedAt)).toEqual([])
  })
})

describe('close() after an unsubscribe', () => {
  it('a message kept after the downstream unsubscribed cannot begin once close() began, and is given back', async () => {
    const inner = new MemoryBackend()
    const events = createEventManager({ backend: inner, env: {} })
    const topic = name('kept')
    await events.publish(topic, newEvent('e', 0))
    const kept = await firstValueFrom(events.topic(topic).consume({ group: 'g', drainTimeout: 10 }))
    const closing = events.close()
    expect(kept.begin()).toBe(false)
    await closing
    expect(kept.outcome).toBe('withdrawn')
  })
})

describe('settlement never rejects (issue 10, item 6)', () => {
  it('a failed dead-letter move resolves failed, the entry stays pending, and a later settlement retries', async () => {
    const inner = new MemoryBackend()
    const { backend, faults } = faulty(inner)
    const events = manager(backend)
    const topic = name('dlqfail')
    await events.publish(topic, newEvent('e', 0))
    const seen: Message[] = []
    events
      .topic(topic)
      .consume({ group: 'g' })
      .subscribe((m) => void seen.push(m))
    await waitFor(() => seen.length === 1, 'the delivery')
    const m = seen[0] as Message
    faults.deadLetter = true
    expect(await m.deadLetter(new Error('bad'))).toBe('failed')
    expect(m.outcome).toBeUndefined()
    expect(await pendingOf(inner, topic, 'g')).toBe(1)
    faults.deadLetter = false
    expect(await m.deadLetter(new Error('bad'))).toBe('dead-lettered')
    expect(await inner.dlqCount(topic)).toBe(1)
  })

  it('when the XACK and the reads both fail, the ack resolves failed, the entry stays pending, and it is handled again once the store is back', async () => {
    const inner = new MemoryBackend()
    const { backend, faults } = faulty(inner)
    const events = manager(backend)
    const topic = name('ackfail')
    await events.publish(topic, newEvent('e', 0))
    const outcomes: string[] = []
    const counts: number[] = []
    events
      .topic(topic)
      .consume({ group: 'g', maxPendingMessages: 1, claimInterval: 30, claimMinIdleTime: 100 })
      .subscribe((m) => {
        counts.push(m.deliveryCount)
        m.begin()
        if (counts.length === 1) {
          faults.ack = true
          faults.reads = true
        }
        void m.ack().then((o) => outcomes.push(o))
      })
    // The acker retries its XACK (about 1 s), then reports failed: never a rejection.
    await waitFor(() => outcomes.length === 1, 'the first outcome', 5_000)
    expect(outcomes[0]).toBe('failed')
    expect(await pendingOf(inner, topic, 'g')).toBe(1)
    faults.ack = false
    faults.reads = false
    // Released from the credit at ack(): the entry is idle in this consumer's pending list and claimed again.
    await waitFor(() => outcomes.length === 2, 'the second handling', 5_000)
    expect(outcomes[1]).toBe('acked')
    expect(counts).toEqual([1, 2])
    await waitFor(async () => (await pendingOf(inner, topic, 'g')) === 0, 'the entry acked')
  })
})
