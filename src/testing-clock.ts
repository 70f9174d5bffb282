import { VirtualTimeScheduler, type SchedulerAction, type SchedulerLike, type Subscription } from 'rxjs'

/**
 * Lets everything that is ready run: pending promise callbacks and the I/O
 * callbacks of in-process work (the memory backend, ack batching), in a few
 * rounds of the event loop. Real timers are not waited for.
 *
 * @param rounds how many turns of the event loop to yield (default 20)
 */
export async function settleVirtualWork(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}

/**
 * Advances a virtual-time scheduler (a `TestScheduler` or any
 * `VirtualTimeScheduler`) by `ms`, one due action at a time, and lets promise
 * work settle after each (see {@link settleVirtualWork}): so Promise handlers,
 * the memory backend and the library's operators can run in virtual time
 * together. Work that finishes between two actions is observed at the frame
 * of the action that started it.
 *
 * ## Example
 * ```ts
 * import { TestScheduler } from 'rxjs/testing'
 * import { advanceVirtualTime } from 'rx-redis-streams/testing'
 * const scheduler = new TestScheduler((actual, expected) => expect(actual).toEqual(expected))
 * const results = scheduler.expectObservable(pipeline$)
 * await advanceVirtualTime(scheduler, 100)
 * results.toBe('--a-b-c', { a: 'acked', b: 'acked', c: 'acked' })
 * scheduler.flush()
 * ```
 * @param scheduler the virtual-time scheduler to drive
 * @param ms how far to advance, in frames (virtual ms)
 * @param rounds event-loop turns to yield after each action
 */
export async function advanceVirtualTime(scheduler: VirtualTimeScheduler, ms: number, rounds = 20): Promise<void> {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`ms must be a non-negative number, got ${String(ms)}`)
  const target = scheduler.frame + ms
  await settleVirtualWork(rounds)
  for (;;) {
    const next = scheduler.actions[0]
    if (next === undefined || next.delay > target) break
    const maxFrames = scheduler.maxFrames
    scheduler.maxFrames = next.delay
    try {
      scheduler.flush()
    } finally {
      scheduler.maxFrames = maxFrames
    }
    await settleVirtualWork(rounds)
  }
  scheduler.frame = target
}

/** Options of {@link VirtualClock}. */
export interface VirtualClockOptions {
  /** The virtual time at frame 0, epoch ms (what `now()` returns before any advance). Default 0. */
  readonly start?: number
  /** The scheduler to drive; default a new `VirtualTimeScheduler`. Pass a `TestScheduler` to mix with marble helpers. */
  readonly scheduler?: VirtualTimeScheduler
  /** Event-loop turns yielded after each timer (see {@link settleVirtualWork}). Default 20. */
  readonly settleRounds?: number
}

/**
 * A virtual clock for tests of Promise-based handlers (which a
 * `TestScheduler` alone cannot drive): pass it as the `scheduler` of
 * `handleEach` or `retryWithBackoff`, as the `now` of a `MemoryBackend`, sleep
 * on it in handlers (`await clock.sleep(20)`), and move time with
 * `await clock.advance(ms)`, which runs every timer due on the way, in order,
 * letting promises and in-process I/O settle after each. Nothing waits in
 * real time; the engine's own timers (consumer timeout, claims, leases) stay
 * real: to fake those too, use vitest's `vi.useFakeTimers()` and
 * `await vi.advanceTimersByTimeAsync(ms)` with the memory backend (and close
 * the manager before `vi.useRealTimers()`). A `TestScheduler`'s `run()` cannot
 * drive `consume()`: it flushes before the backend's promises settle.
 *
 * ## Example
 * ```ts
 * import { handleEach } from 'rx-redis-streams/operators'
 * import { createTestEventManager, MemoryBackend, VirtualClock } from 'rx-redis-streams/testing'
 * const clock = new VirtualClock()
 * const events = createTestEventManager({ backend: new MemoryBackend({ now: () => clock.now() }) })
 * const outcomes: string[] = []
 * events.topic('orders').consume({ group: 'billing' }).pipe(
 *   handleEach(async (msg) => { await clock.sleep(20); await bill(msg.event.payload) }, { scheduler: clock }),
 * ).subscribe(({ outcome }) => outcomes.push(outcome))
 * await clock.advance(1_000)   // a second of handler time, in milliseconds of real time
 * ```
 */
export class VirtualClock implements SchedulerLike {
  /** The scheduler this clock drives. */
  readonly scheduler: VirtualTimeScheduler
  readonly #start: number
  readonly #rounds: number

  constructor(options: VirtualClockOptions = {}) {
    this.scheduler = options.scheduler ?? new VirtualTimeScheduler()
    this.#start = options.start ?? 0
    this.#rounds = options.settleRounds ?? 20
  }

  /** The virtual time, epoch ms. */
  now(): number {
    return this.#start + this.scheduler.frame
  }

  /** Schedules `work` after `delay` virtual ms (the `SchedulerLike` contract). */
  schedule<T>(work: (this: SchedulerAction<T>, state?: T) => void, delay?: number, state?: T): Subscription {
    return this.scheduler.schedule(work, delay, state)
  }

  /** Resolves after `ms` of virtual time (once `advance` has passed it). */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.scheduler.schedule(() => resolve(), Math.max(0, ms))
    })
  }

  /** Moves virtual time forward by `ms`, running what falls due on the way (see {@link advanceVirtualTime}). */
  advance(ms: number): Promise<void> {
    return advanceVirtualTime(this.scheduler, ms, this.#rounds)
  }

  /** Lets ready work run without moving time (see {@link settleVirtualWork}). */
  settle(): Promise<void> {
    return settleVirtualWork(this.#rounds)
  }

  /**
   * Advances from timer to timer (or by `stepMs` when none is due) until
   * `condition` holds; rejects when `maxMs` of virtual time passed first.
   */
  async advanceUntil(condition: () => boolean, options: { readonly stepMs?: number; readonly maxMs?: number } = {}): Promise<void> {
    const step = options.stepMs ?? 1
    const maxMs = options.maxMs ?? 60_000
    const limit = this.scheduler.frame + maxMs
    await this.settle()
    while (!condition()) {
      const frame = this.scheduler.frame
      if (frame >= limit) throw new Error(`condition not met within ${String(maxMs)} ms of virtual time`)
      const next = this.scheduler.actions[0]
      const by = next === undefined ? step : Math.max(0, next.delay - frame)
      await this.advance(Math.min(by, limit - frame))
    }
  }
}
