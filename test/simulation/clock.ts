/**
 * A virtual clock for the simulation: replaces the global timers (`setTimeout`,
 * `setInterval`, `setImmediate` and their `clear*`), `Date` and
 * `performance.now` while installed, so that one seed gives one exact schedule.
 *
 * Time only moves when the harness calls {@link VirtualClock.runUntil}: it
 * drains the microtask queue (one real `setImmediate` turn: Node empties every
 * microtask and `nextTick` before it), fires the earliest due timer (ties in
 * creation order), and repeats. Nothing here is random; the seeded choices are
 * the harness's.
 */

interface Timer {
  readonly id: number
  at: number
  seq: number
  readonly callback: (...args: unknown[]) => void
  readonly args: unknown[]
  readonly interval: number | null
  readonly delay: number
  ref: boolean
  cancelled: boolean
}

/** What `setTimeout` returns here: a Node-like handle. */
export class VirtualTimeout {
  readonly #clock: VirtualClock
  readonly #timer: Timer
  constructor(clock: VirtualClock, timer: Timer) {
    this.#clock = clock
    this.#timer = timer
  }
  get timerId(): number {
    return this.#timer.id
  }
  ref(): this {
    this.#timer.ref = true
    return this
  }
  unref(): this {
    this.#timer.ref = false
    return this
  }
  hasRef(): boolean {
    return this.#timer.ref
  }
  refresh(): this {
    this.#clock.refresh(this.#timer)
    return this
  }
  close(): this {
    this.#timer.cancelled = true
    return this
  }
  [Symbol.toPrimitive](): number {
    return this.#timer.id
  }
}

/** Thrown out of {@link VirtualClock.runUntil} when timers keep firing without time moving. */
export class SpinError extends Error {
  override readonly name = 'SpinError'
}

type Saved = Pick<typeof globalThis, 'setTimeout' | 'clearTimeout' | 'setInterval' | 'clearInterval' | 'setImmediate' | 'clearImmediate' | 'Date'>

const realSetImmediate = globalThis.setImmediate
const RealDate = globalThis.Date

/** One real event-loop turn: every queued microtask and nextTick has run when it resolves. */
export const drainMicrotasks = (): Promise<void> => new Promise((resolve) => realSetImmediate(resolve))

export class VirtualClock {
  #now: number
  #seq = 0
  #nextId = 1
  readonly #timers = new Map<number, Timer>()
  #saved: Saved | undefined
  /** Timers fired so far (a cost measure). */
  fired = 0
  /** Called with an error thrown by a timer callback (the harness records it). */
  onError: (error: unknown) => void = () => undefined

  constructor(startMs: number) {
    this.#now = startMs
  }

  now(): number {
    return this.#now
  }

  /** Pending timers (for diagnostics). */
  pendingTimers(): number {
    let n = 0
    for (const t of this.#timers.values()) if (!t.cancelled) n++
    return n
  }

  #add(callback: (...args: unknown[]) => void, delay: unknown, args: unknown[], interval: boolean): VirtualTimeout {
    let ms = typeof delay === 'number' && Number.isFinite(delay) ? Math.max(0, Math.floor(delay)) : 0
    // Node: a delay above 2^31-1 becomes 1 ms (with a TimeoutOverflowWarning); keep that behaviour visible.
    if (ms > 2_147_483_647) ms = 1
    if (interval && ms === 0) ms = 1
    const timer: Timer = {
      id: this.#nextId++,
      at: this.#now + ms,
      seq: this.#seq++,
      callback,
      args,
      interval: interval ? ms : null,
      delay: ms,
      ref: true,
      cancelled: false,
    }
    this.#timers.set(timer.id, timer)
    return new VirtualTimeout(this, timer)
  }

  /** Re-arms a timer for its full delay from now (Node's `refresh()`). */
  refresh(timer: Timer): void {
    if (timer.cancelled) return
    timer.at = this.#now + (timer.interval ?? timer.delay)
    timer.seq = this.#seq++
    this.#timers.set(timer.id, timer)
  }

  #clear(handle: unknown): void {
    let id: number | undefined
    if (handle instanceof VirtualTimeout) id = handle.timerId
    else if (typeof handle === 'number') id = handle
    if (id === undefined) return
    const timer = this.#timers.get(id)
    if (timer !== undefined) {
      timer.cancelled = true
      this.#timers.delete(id)
    }
  }

  /** Replaces the global timers, Date and performance.now. */
  install(): void {
    if (this.#saved !== undefined) return
    const g = globalThis as unknown as Record<string, unknown>
    this.#saved = {
      setTimeout: globalThis.setTimeout,
      clearTimeout: globalThis.clearTimeout,
      setInterval: globalThis.setInterval,
      clearInterval: globalThis.clearInterval,
      setImmediate: globalThis.setImmediate,
      clearImmediate: globalThis.clearImmediate,
      Date: globalThis.Date,
    }
    g['setTimeout'] = (cb: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => this.#add(cb, ms, args, false)
    g['setInterval'] = (cb: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => this.#add(cb, ms, args, true)
    g['setImmediate'] = (cb: (...a: unknown[]) => void, ...args: unknown[]) => this.#add(cb, 0, args, false)
    g['clearTimeout'] = (h: unknown) => this.#clear(h)
    g['clearInterval'] = (h: unknown) => this.#clear(h)
    g['clearImmediate'] = (h: unknown) => this.#clear(h)
    const now = (): number => this.#now
    class VirtualDate extends RealDate {
      constructor(...args: unknown[]) {
        if (args.length === 0) super(now())
        else super(...(args as [string | number]))
      }
      static override now(): number {
        return now()
      }
    }
    g['Date'] = VirtualDate
    Object.defineProperty(performance, 'now', { value: () => this.#now, configurable: true, writable: true })
  }

  /** Restores the real globals. */
  uninstall(): void {
    const saved = this.#saved
    if (saved === undefined) return
    Object.assign(globalThis, saved)
    this.#saved = undefined
    // The own property shadowed Performance.prototype.now: removing it restores the real one.
    Reflect.deleteProperty(performance, 'now')
    for (const t of this.#timers.values()) t.cancelled = true
    this.#timers.clear()
  }

  #earliest(): Timer | undefined {
    let best: Timer | undefined
    for (const t of this.#timers.values()) {
      if (t.cancelled) continue
      if (best === undefined || t.at < best.at || (t.at === best.at && t.seq < best.seq)) best = t
    }
    return best
  }

  /**
   * Runs timers in time order until `done()` holds (checked after each drained
   * step) or the next timer is later than `untilMs`; the clock then stands at
   * `untilMs` (or where `done` held). Throws {@link SpinError} after
   * `maxSameTime` timers at one instant.
   */
  async runUntil(untilMs: number, done: () => boolean = () => false, maxSameTime = 20_000): Promise<void> {
    let sameTime = 0
    let lastAt = this.#now
    for (;;) {
      await drainMicrotasks()
      if (done()) return
      const next = this.#earliest()
      if (next === undefined || next.at > untilMs) {
        this.#now = Math.max(this.#now, untilMs)
        return
      }
      if (next.at === lastAt) {
        if (++sameTime > maxSameTime) throw new SpinError(`more than ${maxSameTime} timers fired at t=${next.at} without time moving`)
      } else {
        sameTime = 0
        lastAt = next.at
      }
      this.#now = Math.max(this.#now, next.at)
      if (next.interval === null) this.#timers.delete(next.id)
      else {
        next.at = this.#now + next.interval
        next.seq = this.#seq++
      }
      this.fired++
      try {
        next.callback(...next.args)
      } catch (error) {
        this.onError(error)
      }
    }
  }
}
