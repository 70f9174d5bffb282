/**
 * The engine's bookkeeping bugs of issue 11, each pinned by a test on the
 * memory backend (some wrap it to delay or fail calls at the port).
 */
import { map } from 'rxjs'
import { describe, expect, it } from 'vitest'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import type { GroupReader, StreamBackend } from '../../src/backend/types.js'
import { DelayedPromoter } from '../../src/delayed.js'
import { BackendError } from '../../src/errors.js'
import { silentLogger } from '../../src/logger.js'
import { createInstruments } from '../../src/telemetry/instruments.js'
import { newEvent, type Message } from '../../src/index.js'
import { name, sleep, trackManagers, waitFor } from '../support/engine.js'

const manager = trackManagers()

/** Port faults: each verb may be delayed by a timer (so call orders change) or made to fail. */
interface Faults {
  delayMs: Partial<Record<keyof StreamBackend, number>>
  failReads: number
  readError: () => Error
}

function faulty(inner: MemoryBackend): { backend: StreamBackend; faults: Faults } {
  const faults: Faults = { delayMs: {}, failReads: 0, readError: () => new BackendError('connection lost') }
  const backend = new Proxy(inner, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver)
      if (typeof value !== 'function') return value
      const fn = value as (...args: unknown[]) => unknown
      if (prop === 'createReader') {
        return () => {
          const reader = fn.call(target) as GroupReader
          const wrapped: GroupReader = {
            read: async (...args) => {
              if (faults.failReads > 0) {
                faults.failReads--
                await sleep(1)
                throw faults.readError()
              }
              return reader.read(...args)
            },
            close: () => reader.close(),
          }
          return wrapped
        }
      }
      return (...args: unknown[]) => {
        const delay = faults.delayMs[prop as keyof StreamBackend]
        const result = fn.apply(target, args)
        if (delay === undefined || !(result instanceof Promise)) return result
        return result.then(async (v: unknown) => {
          await sleep(delay)
          return v
        })
      }
    },
  }) as StreamBackend
  return { backend, faults }
}

describe('engine bookkeeping (issue 11)', () => {
  it('bug 1: maxPendingMessages 1 never stalls when a claim scan that finds nothing took the freed credit', async () => {
    const { backend, faults } = faulty(new MemoryBackend())
    // XAUTOCLAIM answers after a timer, as over a network: the pull loop runs while the scan is in flight.
    faults.delayMs.claimIdle = 15
    const events = manager(backend)
    const topic = name('stall')
    await events.publishBatch(topic, Array.from({ length: 6 }, (_, i) => newEvent('e', i)))
    const handled: number[] = []
    events
      .topic(topic)
      .consume({ group: 'g', maxPendingMessages: 1, claimInterval: 10, claimMinIdleTime: 60_000, blockMs: 50 })
      .subscribe((m) => {
        // Held past a claim tick, so that the tick finds the credit used and waits for the release.
        setTimeout(() => {
          handled.push(m.event.payload as number)
          void m.ack()
        }, 30)
      })
    await waitFor(() => handled.length === 6, 'all 6 events handled (the subscription stalled)')
    expect(handled).toEqual([0, 1, 2, 3, 4, 5])
  })

  it('bug 6: a nack redelivery never lets a waiting claim scan exceed maxPendingMessages', async () => {
    const inner = new MemoryBackend()
    const events = manager(inner)
    const topic = name('credit')
    await events.publish(topic, newEvent('mine', 0))
    await inner.ensureGroup(topic, 'g', 'beginning')
    const sub = events.topic(topic)
    let unsettled = 0
    let maxUnsettled = 0
    const seen: string[] = []
    let foreignPublished = false
    sub.consume({ group: 'g', consumer: 'b', maxPendingMessages: 1, claimInterval: 10, claimMinIdleTime: 150 }).subscribe((m) => {
      unsettled++
      maxUnsettled = Math.max(maxUnsettled, unsettled)
      seen.push(`${m.event.name}:${String(m.deliveryCount)}`)
      if (m.event.name === 'mine' && m.deliveryCount === 1) {
        void (async () => {
          // Another consumer takes a second entry and dies with it: claimable after 150 ms, while the nacked copy waits.
          if (!foreignPublished) {
            foreignPublished = true
            await events.publish(topic, newEvent('foreign', 1))
            const reader = inner.createReader()
            await reader.read(topic, 'g', 'dead', { count: 1, blockMs: 1, from: 'new' })
          }
          unsettled--
          await m.nack(new Error('again'), { delay: 300 })
        })()
        return
      }
      setTimeout(() => {
        unsettled--
        void m.ack()
      }, 20)
    })
    await waitFor(() => seen.length >= 3, 'the redelivery and the claimed entry').catch((e: unknown) => {
      throw new Error(`${String(e)}: ${seen.join(',')}`)
    })
    expect(seen).toContain('mine:2')
    expect(seen.some((s) => s.startsWith('foreign')), seen.join(',')).toBe(true)
    // The nacked copy still held its unit until its new copy replaced it.
    expect(maxUnsettled).toBeLessThanOrEqual(1)
  })

  it('bug 3: a failed read does not raise the delivery count of a message still held', async () => {
    const inner = new MemoryBackend()
    const { backend, faults } = faulty(inner)
    const events = manager(backend, { maxRetries: 5, retryBackoff: 1 })
    const topic = name('reread')
    await events.publish(topic, newEvent('held', 0))
    await inner.ensureGroup(topic, 'g', 'beginning')
    // The entry is pending for consumer w (delivered once, never settled): a restart re-reads it (count 2), on a quiet stream.
    await inner.createReader().read(topic, 'g', 'w', { count: 1, blockMs: 1, from: 'new' })
    const copies: Message[] = []
    events
      .topic(topic)
      .consume({ group: 'g', consumer: 'w', blockMs: 20, claimInterval: 0, drainTimeout: 50 })
      .subscribe((m) => {
        m.begin()
        copies.push(m)
      })
    await waitFor(() => copies.length === 1, 'the re-read')
    expect(copies[0]?.deliveryCount).toBe(2)
    // Reads fail twice; the engine re-reads its own pending entries after each failure.
    faults.failReads = 2
    // Past the recovered message's probation (1 s), so that the re-read is not held back by the slow start.
    await sleep(1_300)
    await copies[0]?.nack(new Error('once more'), { delay: 0 })
    await waitFor(() => copies.length === 2, 'the redelivery')
    // 2 + 1 for the nack: the re-reads after the failed reads did not touch the held entry.
    expect(copies[1]?.deliveryCount).toBe(3)
  })

  it('bug 4: every numeric option of consume() and subscribe() is validated with a RangeError naming it; blockMs 0 is refused', () => {
    const events = manager(new MemoryBackend())
    const topic = events.topic(name('opts'))
    const bad: Record<string, unknown>[] = [
      { blockMs: 0 },
      { blockMs: -1 },
      { blockMs: 1.5 },
      { batchSize: 0 },
      { maxPendingMessages: 0 },
      { consumerTimeout: 0 },
      { consumerTimeout: Number.NaN },
      { drainTimeout: -1 },
      { claimMinIdleTime: 0 },
      { claimInterval: -5 },
      { claimInterval: 2 ** 31 },
      { maxGiveBacks: 0 },
    ]
    for (const option of bad) {
      const key = Object.keys(option)[0] as string
      expect(() => topic.consume({ group: 'g', ...option }), key).toThrow(RangeError)
      expect(() => topic.consume({ group: 'g', ...option }), key).toThrow(new RegExp(`^${key}`))
      expect(() => events.subscribe(topic.name, 'g', () => undefined, option), key).toThrow(new RegExp(`^${key}`))
    }
    // 0 turns claiming off; it is valid.
    expect(() => topic.consume({ group: 'g', claimInterval: 0, drainTimeout: 0 })).not.toThrow()
  })

  it('bug 5: an undecodable payload read in a user operator is dead-lettered, errors the Observable with MalformedPayloadError, and shows in health()', async () => {
    const inner = new MemoryBackend()
    const events = manager(inner)
    const topic = name('malformed')
    await inner.append(topic, [['id', 'e1', 'name', 'bad', 'ts', '1', 'headers', '{}', 'payload', '{not json']])
    let failure: unknown
    events
      .topic(topic)
      .consume({ group: 'g', consumer: 'c1' })
      .pipe(map((m) => m.event.payload))
      .subscribe({ error: (e: unknown) => (failure = e) })
    await waitFor(() => failure !== undefined, 'the pipeline error')
    expect((failure as Error).name).toBe('MalformedPayloadError')
    await waitFor(async () => (await inner.dlqCount(topic)) === 1, 'the dead letter')
    const [letter] = await inner.dlqList(topic, { count: 1 })
    const fields = letter?.fields ?? []
    expect(fields[fields.indexOf('dlq_error') + 1]).toMatch(/^malformed_json:/)
    expect(fields[fields.indexOf('dlq_error_class') + 1]).toBe('MalformedPayloadError')
    await waitFor(() => events.internals.subscriptions().some((s) => s.state === 'errored'), 'an errored subscription in health')
    const errored = events.internals.subscriptions().find((s) => s.state === 'errored')
    expect(errored?.error).toMatch(/cannot be decoded/)
    const health = await events.health()
    expect(health.subscriptions.some((s) => s.state === 'errored')).toBe(true)
  })

  it('bug 7: a malformed replay for another group is ignored by this group (not dead-lettered again)', async () => {
    const inner = new MemoryBackend()
    const events = manager(inner)
    const topic = name('replay')
    await inner.ensureGroup(topic, 'mine', 'beginning')
    // A replay targeted at group "other", with no name and a broken payload.
    await inner.append(topic, [['replay_group', 'other', 'id', 'e1', 'payload', '{broken']])
    await events.publish(topic, newEvent('after', 1))
    const seen: string[] = []
    events
      .topic(topic)
      .consume({ group: 'mine' })
      .subscribe((m) => {
        seen.push(m.event.name)
        void m.ack()
      })
    await waitFor(() => seen.length === 1, 'the next event')
    await sleep(50)
    expect(seen).toEqual(['after'])
    expect(await inner.dlqCount(topic)).toBe(0)
    const [group] = await inner.groups(topic)
    expect(group?.pending).toBe(0)
  })

  it('bug 8: a nack delay past 2^31-1 ms is not cut to 1 ms', async () => {
    const events = manager(new MemoryBackend())
    const topic = name('long')
    await events.publish(topic, newEvent('later', 0))
    const counts: number[] = []
    events
      .topic(topic)
      .consume({ group: 'g' })
      .subscribe((m) => {
        counts.push(m.deliveryCount)
        void m.nack(new Error('in 30 days'), { delay: 30 * 24 * 3_600_000 })
      })
    await waitFor(() => counts.length === 1, 'the first delivery')
    await sleep(200)
    expect(counts).toEqual([1])
  })

  it('bug 8: the promoter woken for an event years ahead while a pass runs prints no TimeoutOverflowWarning', async () => {
    const { backend, faults } = faulty(new MemoryBackend())
    // A pass takes a while (as over a network): a notify() arrives while it runs.
    faults.delayMs.promoteDue = 40
    const warnings: string[] = []
    const onWarning = (w: Error): void => void warnings.push(w.name)
    process.on('warning', onWarning)
    const promoter = new DelayedPromoter({ topic: name('far'), backend, checkIntervalMs: 1_000, logger: silentLogger(), instruments: createInstruments() })
    try {
      promoter.start()
      await sleep(15)
      promoter.notify(Date.now() + 4 * 365 * 24 * 3_600_000)
      await sleep(100)
    } finally {
      promoter.stop()
      process.off('warning', onWarning)
    }
    expect(warnings).not.toContain('TimeoutOverflowWarning')
  })

  it('bug 10: a dead letter records handler runs, deliveries, the error class, a capped stack and the consumer', async () => {
    const inner = new MemoryBackend()
    const events = manager(inner)
    const topic = name('dlq')
    await events.publish(topic, newEvent('poison', 0))
    events
      .topic(topic)
      .consume({ group: 'g', consumer: 'worker-7' })
      .subscribe((m) => {
        void (async () => {
          let last: Error = new Error('never')
          for (let i = 0; i < 4; i++) {
            if (!m.begin()) return
            last = new TypeError(`attempt ${String(i + 1)} failed`)
          }
          await m.deadLetter(last)
        })()
      })
    await waitFor(async () => (await inner.dlqCount(topic)) === 1, 'the dead letter')
    const [letter] = await inner.dlqList(topic, { count: 1 })
    const f = letter?.fields ?? []
    const field = (k: string): string | undefined => {
      for (let i = 0; i + 1 < f.length; i += 2) if (f[i] === k) return f[i + 1]
      return undefined
    }
    expect(field('dlq_handler_runs')).toBe('4')
    expect(field('dlq_deliveries') ?? field('dlq_attempts')).toBe('1')
    expect(field('dlq_error_class')).toBe('TypeError')
    expect(field('dlq_stack')).toMatch(/TypeError: attempt 4 failed/)
    expect((field('dlq_stack') ?? '').length).toBeLessThanOrEqual(4_096)
    expect(field('dlq_consumer')).toBe('worker-7')
  })
})
