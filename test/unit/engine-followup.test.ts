/**
 * Engine follow-ups of issues 10 and 11: a timed-out run and its redelivered
 * copy never overlap in one consumer; the re-read after a failed read never
 * raises the count of an entry a claim in flight took.
 */
import { describe, expect, it } from 'vitest'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import type { GroupReader, StreamBackend } from '../../src/backend/types.js'
import { BackendError, ConnectionError } from '../../src/errors.js'
import { createEventManager, newEvent, type Logger, type Message } from '../../src/index.js'
import { freePort } from '../support/redis-server.js'
import { name, sleep, trackManagers, waitFor } from '../support/engine.js'

const manager = trackManagers()

describe('engine follow-ups', () => {
  it('an entry dead-lettered at its timeout while its run ignores the signal, then delivered again (group re-created), is not run twice at once (simulation seed 3482)', async () => {
    const backend = new MemoryBackend()
    const events = manager(backend, { maxRetries: 0 })
    const topic = name('zombie')
    const group = 'g'
    await events.publish(topic, newEvent('slow', 0))
    const runs: { count: number; start: number; end?: number }[] = []
    let running = 0
    let maxRunning = 0
    let releaseFirst: (() => void) | undefined
    events
      .topic(topic)
      .consume({ group, consumerTimeout: 100, claimInterval: 0 })
      .subscribe((m: Message) => {
        if (!m.begin()) return
        const run: { count: number; start: number; end?: number } = { count: m.deliveryCount, start: Date.now() }
        runs.push(run)
        running++
        maxRunning = Math.max(maxRunning, running)
        // The first run ignores its AbortSignal until the test releases it; a later one acks at once.
        const work = runs.length === 1 ? new Promise<void>((r) => (releaseFirst = r)) : Promise.resolve()
        void work.then(async () => {
          running--
          run.end = Date.now()
          await m.ack()
        })
      })
    // maxRetries 0: the timeout dead-letters it while the run is still out.
    await waitFor(async () => (await events.deadLetters.count(topic)) === 1, 'the dead letter')
    // The group is destroyed and re-created from the start: the entry is delivered to this consumer again, count 1.
    await backend.destroyGroup(topic, group)
    await sleep(300)
    expect(runs).toHaveLength(1)
    releaseFirst?.()
    await waitFor(() => runs.length === 2 && runs[1]?.end !== undefined, 'the second run, after the first returned')
    expect(maxRunning).toBe(1)
    expect(runs[1]?.start ?? 0).toBeGreaterThanOrEqual(runs[0]?.end ?? Infinity)
  })

  it('a copy redelivered after a consumer timeout is not started here until the timed-out run returned, however long it runs', async () => {
    const events = manager(new MemoryBackend(), { maxRetries: 5, retryBackoff: 1 })
    const topic = name('overlap')
    await events.publish(topic, newEvent('slow', 0))
    const runs: { count: number; start: number; end?: number }[] = []
    let running = 0
    let maxRunning = 0
    const outcomes: string[] = []
    events
      .topic(topic)
      .consume({ group: 'g', consumerTimeout: 100, claimInterval: 0 })
      .subscribe((m: Message) => {
        if (!m.begin()) return
        const run: { count: number; start: number; end?: number } = { count: m.deliveryCount, start: Date.now() }
        runs.push(run)
        running++
        maxRunning = Math.max(maxRunning, running)
        // The first run ignores its AbortSignal and runs 5 timeouts long; the copy acks at once.
        void sleep(m.deliveryCount === 1 ? 500 : 0).then(async () => {
          running--
          run.end = Date.now()
          outcomes.push(`${String(m.deliveryCount)}:${await m.ack()}`)
        })
      })
    await waitFor(() => outcomes.length === 2, 'both runs settled')
    expect(runs.map((r) => r.count)).toEqual([1, 2])
    expect(maxRunning).toBe(1)
    expect(runs[1]?.start ?? 0).toBeGreaterThanOrEqual(runs[0]?.end ?? Number.POSITIVE_INFINITY)
    // The late run's ack says it was taken; the copy's ack acks.
    expect(outcomes).toEqual(['1:withdrawn', '2:acked'])
  })

  it('the re-read after a failed read does not raise the count of an entry a claim in flight took', async () => {
    const inner = new MemoryBackend()
    let failReads = 0
    let claims = 0
    // claimIdle runs at once in the store and answers 150 ms later (over a network); the first claim makes the
    // next read fail, so the re-read of own pending entries is planned while the claim's answer is on its way.
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
                if (failReads > 0) {
                  failReads--
                  await sleep(1)
                  throw new BackendError('connection lost')
                }
                return reader.read(...args)
              },
              close: () => reader.close(),
            }
            return wrapped
          }
        }
        if (prop === 'claimIdle') {
          return async (...args: unknown[]) => {
            const result = await (fn.apply(target, args) as Promise<unknown>)
            if (claims++ === 0) failReads = 1
            await sleep(150)
            return result
          }
        }
        return (...args: unknown[]) => fn.apply(target, args)
      },
    }) as StreamBackend
    const events = manager(backend, { maxRetries: 5, retryBackoff: 1 })
    const topic = name('claimed')
    await events.publish(topic, newEvent('orphan', 0))
    await inner.ensureGroup(topic, 'g', 'beginning')
    // A consumer that died holding the entry (delivered once).
    await inner.createReader().read(topic, 'g', 'dead', { count: 1, blockMs: 1, from: 'new' })
    await sleep(330)
    const copies: Message[] = []
    events
      .topic(topic)
      .consume({ group: 'g', consumer: 'w', blockMs: 20, claimInterval: 10, claimMinIdleTime: 300, drainTimeout: 50 })
      .subscribe((m) => {
        if (!m.begin()) return
        copies.push(m)
      })
    await waitFor(() => copies.length === 1, 'the claim')
    // Claimed: 2. Past its probation, so that nothing else holds the redelivery back.
    expect(copies[0]?.deliveryCount).toBe(2)
    await sleep(1_300)
    await copies[0]?.nack(new Error('once more'), { delay: 0 })
    await waitFor(() => copies.length === 2, 'the redelivery')
    // 2 + 1 for the nack: the re-read after the failed read did not touch the claimed entry.
    expect(copies[1]?.deliveryCount).toBe(3)
    expect(claims).toBeGreaterThan(0)
  })

  it('maxConnectAttempts: a consumer on a closed port errors its Observable with the ConnectionError after N failed reads, warning through the logger', async () => {
    const port = await freePort()
    const warnings: string[] = []
    const logger = {
      level: 'warn',
      trace: () => undefined,
      debug: () => undefined,
      info: () => undefined,
      warn: (obj: unknown, msg?: string) => void warnings.push(typeof obj === 'string' ? obj : (msg ?? '')),
      error: () => undefined,
      fatal: () => undefined,
      child: () => logger,
    }
    const events = createEventManager({ redisUrl: `redis://127.0.0.1:${String(port)}`, env: {}, commandTimeout: '30s', logger: logger as unknown as Logger })
    manager.track(events)
    const failed = new Promise<unknown>((resolve, reject) => {
      events
        .topic(name('unreachable'))
        .consume({ group: 'g', maxConnectAttempts: 2, claimInterval: 0 })
        .subscribe({ next: () => reject(new Error('a message from a closed port')), error: resolve, complete: () => reject(new Error('completed')) })
    })
    const error = await Promise.race([failed, sleep(20_000).then(() => 'still retrying')])
    expect(error).toBeInstanceOf(ConnectionError)
    expect((error as ConnectionError).kind).toBe('connection')
    expect((error as ConnectionError).address).toBe(`127.0.0.1:${String(port)}`)
    // The read failures were logged as warnings through the given logger (the manager adds its own once).
    expect(warnings.some((w) => /read failed/.test(w))).toBe(true)
    expect(warnings.some((w) => /Redis connection failed/.test(w))).toBe(true)
    const health = await events.health()
    expect(JSON.stringify(health)).toMatch(/errored/)
  }, 30_000)

  it('maxConnectAttempts is validated (integer >= 1)', () => {
    const events = manager(new MemoryBackend())
    for (const bad of [0, -1, 1.5, Number.NaN]) {
      expect(() => events.topic(name('t')).consume({ group: 'g', maxConnectAttempts: bad })).toThrow(/^maxConnectAttempts/)
    }
  })
})

describe('a timed-out attempt', () => {
  it('is recorded before its signal aborts: a settlement from the abort listener resolves withdrawn', async () => {
    const events = manager(new MemoryBackend(), { maxRetries: 3, retryBackoff: 1 })
    const topic = name('abort-order')
    await events.publish(topic, newEvent('slow', {}))
    const fromListener: Promise<string>[] = []
    const seen: Message[] = []
    const sub = events.topic(topic).consume({ group: 'g', consumerTimeout: 100 }).subscribe((m) => {
      if (!m.begin()) return
      seen.push(m)
      if (m.deliveryCount === 1) m.signal.addEventListener('abort', () => fromListener.push(m.ack()))
      else void m.ack()
    })
    await waitFor(() => seen.length === 2, 'the redelivery after the timed-out run settled')
    expect(await Promise.all(fromListener)).toEqual(['withdrawn'])
    expect(seen[1]!.deliveryCount).toBe(2)
    sub.unsubscribe()
  })
})
