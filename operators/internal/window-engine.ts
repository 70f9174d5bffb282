import { asyncScheduler, Observable, type OperatorFunction, type SchedulerLike, type Subscriber, type Subscription } from 'rxjs'
import { CompositeSettleable, creditLimitOf, holdOpen, releaseHold, Share } from '../../src/shared-settlement.js'
import type { Outcome, Settleable } from '../../src/settle.js'
import {
  LateEventError,
  type Late,
  type LatePolicy,
  type Timestamped,
  type Window,
  type WindowOptions,
} from '../window-types.js'

/*
 * The event-time machinery behind the window operators and joinWithin:
 * stream time (with idle advancement), the min-heap of closing times, and the
 * window engine, which places messages with a Placement (fixed bounds for
 * tumbling and sliding windows, merging sessions for session windows), closes
 * windows in order, and keeps settlement and holds right.
 */

/**
 * A settlement promise nobody waits for. A failed ack leaves the entry
 * pending, so it is redelivered (at least once); the engine reports it.
 */
export function quietly(settling: Promise<Outcome>): void {
  settling.catch(() => undefined)
}

// ---------------------------------------------------------------- validation

export function requirePositive(name: string, value: number): void {
  if (!(value > 0) || !Number.isFinite(value)) throw new RangeError(`${name} must be a positive finite number, got ${value}`)
}

export function requireNonNegative(name: string, value: number): void {
  if (!(value >= 0) || !Number.isFinite(value)) throw new RangeError(`${name} must be a finite number >= 0, got ${value}`)
}

export function requireCount(name: string, value: number): void {
  if (!(value >= 1) || !(Number.isInteger(value) || value === Number.POSITIVE_INFINITY)) {
    throw new RangeError(`${name} must be an integer >= 1, got ${value}`)
  }
}

/** The event time of a `Message` (or anything with `event.timestamp`). */
export function eventTimestamp(value: unknown): number {
  return (value as Timestamped).event.timestamp
}

// ---------------------------------------------------------------- min-heap

/** A binary min-heap. */
export class MinHeap<E> {
  readonly #items: E[] = []
  readonly #less: (a: E, b: E) => boolean

  constructor(less: (a: E, b: E) => boolean) {
    this.#less = less
  }

  get size(): number {
    return this.#items.length
  }

  peek(): E | undefined {
    return this.#items[0]
  }

  push(item: E): void {
    const items = this.#items
    items.push(item)
    let i = items.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      const p = items[parent] as E
      if (!this.#less(item, p)) break
      items[i] = p
      i = parent
    }
    items[i] = item
  }

  pop(): E | undefined {
    const items = this.#items
    const top = items[0]
    const last = items.pop()
    if (items.length === 0 || last === undefined) return top
    let i = 0
    for (;;) {
      const left = 2 * i + 1
      if (left >= items.length) break
      const right = left + 1
      let child = left
      if (right < items.length && this.#less(items[right] as E, items[left] as E)) child = right
      const c = items[child] as E
      if (!this.#less(c, last)) break
      items[i] = c
      i = child
    }
    items[i] = last
    return top
  }
}

// ---------------------------------------------------------------- stream time

/**
 * Stream time: the largest event time seen. With an idle timeout, once stream
 * time has not moved for `idleTimeout` of scheduler time, it follows the
 * clock: it grows by the scheduler time elapsed since it last moved. An event
 * ahead of it moves it again (and restarts the idle count); one behind it
 * changes nothing. It never goes back.
 */
export class StreamClock {
  readonly #scheduler: SchedulerLike
  readonly #idleTimeout: number | undefined
  /** The largest event time seen. */
  #eventTime = Number.NEGATIVE_INFINITY
  /** Scheduler time when stream time last moved by an event. */
  #movedAt = 0
  #ended = false

  constructor(scheduler: SchedulerLike, idleTimeout: number | undefined) {
    this.#scheduler = scheduler
    this.#idleTimeout = idleTimeout
  }

  /** Current stream time. */
  now(): number {
    if (this.#ended) return Number.POSITIVE_INFINITY
    if (this.#idleTimeout === undefined || this.#eventTime === Number.NEGATIVE_INFINITY) return this.#eventTime
    const idle = this.#scheduler.now() - this.#movedAt
    return idle >= this.#idleTimeout ? this.#eventTime + idle : this.#eventTime
  }

  /** Takes in the event time of an arriving event. */
  observe(time: number): void {
    if (time > this.now()) {
      this.#eventTime = time
      this.#movedAt = this.#scheduler.now()
    }
  }

  /** End of input: stream time becomes +Infinity, so everything closes. */
  end(): void {
    this.#ended = true
  }

  /** Scheduler delay (ms) until stream time reaches `target` with no further events; undefined without idle advancement. */
  delayUntil(target: number): number | undefined {
    if (this.#idleTimeout === undefined || !Number.isFinite(this.#eventTime) || this.#ended) return undefined
    const due = this.#movedAt + Math.max(this.#idleTimeout, target - this.#eventTime)
    return Math.max(0, due - this.#scheduler.now())
  }
}

/**
 * A single timer re-armed to wake the operator when stream time (advanced by
 * the clock) reaches the next closing time.
 */
export class IdleTimer {
  readonly #scheduler: SchedulerLike
  readonly #wake: () => void
  #timer: Subscription | undefined
  #due = Number.NaN

  constructor(scheduler: SchedulerLike, wake: () => void) {
    this.#scheduler = scheduler
    this.#wake = wake
  }

  /**
   * Arms the timer `delay` ms from now (undefined: disarms it). A timer armed
   * for the same time or earlier is kept: on waking, the owner re-arms it for
   * the time then due, so a busy stream does not reschedule per event.
   */
  arm(delay: number | undefined): void {
    if (delay === undefined) {
      this.cancel()
      return
    }
    const due = this.#scheduler.now() + delay
    if (this.#timer !== undefined && this.#due <= due) return
    this.cancel()
    this.#due = due
    this.#timer = this.#scheduler.schedule(() => {
      this.#timer = undefined
      this.#due = Number.NaN
      this.#wake()
    }, delay)
  }

  cancel(): void {
    this.#timer?.unsubscribe()
    this.#timer = undefined
    this.#due = Number.NaN
  }
}

// ---------------------------------------------------------------- results

class WindowValue<T extends Settleable> extends CompositeSettleable implements Window<T> {
  readonly kind = 'window' as const
  readonly key: string
  readonly start: number
  readonly end: number
  readonly messages: readonly T[]
  readonly early: boolean

  constructor(key: string, start: number, end: number, messages: readonly T[], early: boolean) {
    super(messages.map((message) => new Share(message)))
    this.key = key
    this.start = start
    this.end = end
    this.messages = messages
    this.early = early
  }
}

class LateValue<T extends Settleable> extends CompositeSettleable implements Late<T> {
  readonly kind = 'late' as const
  readonly key: string
  readonly timestamp: number
  readonly streamTime: number
  readonly message: T

  constructor(key: string, timestamp: number, streamTime: number, message: T) {
    super([new Share(message)])
    this.key = key
    this.timestamp = timestamp
    this.streamTime = streamTime
    this.message = message
  }
}

// ---------------------------------------------------------------- window engine

/** A window still collecting messages. */
export interface OpenWindow<T> {
  readonly key: string
  readonly start: number
  readonly end: number
  readonly messages: readonly T[]
}

/** What a {@link Placement} may do with the engine's open windows. */
export interface WindowBook<T> {
  /** Opens a window `[start, end)` of `key`. */
  open(key: string, start: number, end: number): OpenWindow<T>
  /** Moves the bounds of an open window (a growing session). */
  resize(window: OpenWindow<T>, start: number, end: number): void
  /** Moves the messages of `from` into `into` (arrival order kept) and closes `from` without emitting it. */
  merge(into: OpenWindow<T>, from: OpenWindow<T>): void
}

/** Where a message goes: one per subscription, it keeps its own index of open windows. */
export interface Placement<T> {
  /**
   * The open windows a message of `key` at event time `time` belongs to,
   * opened, grown or merged as needed. Empty when they have all closed (a late
   * event). A window is open while `end + grace > streamTime`.
   */
  place(key: string, time: number, streamTime: number, grace: number, book: WindowBook<T>): readonly OpenWindow<T>[]
  /** Forgets a window that is emitted or merged away. */
  detach(window: OpenWindow<T>): void
}

interface MutableWindow<T> extends OpenWindow<T> {
  start: number
  end: number
  messages: T[]
  closeAt: number
  readonly seq: number
  version: number
  open: boolean
}

interface HeapEntry<T> {
  readonly closeAt: number
  readonly start: number
  readonly seq: number
  readonly version: number
  readonly window: MutableWindow<T>
}

interface Held<T extends Settleable> {
  /** Open windows holding the message. */
  windows: number
  /** The engine's share, released when no open window holds the message any more. */
  readonly share: Share<T>
  /** Arrival order, to keep merged sessions in arrival order. */
  readonly arrival: number
}

/** Window options with defaults applied. */
interface WindowConfig<T> {
  readonly key: (value: T) => string
  readonly timestamp: (value: T) => number
  readonly grace: number
  readonly maxMessages: number
  readonly maxOpenMessages: number
  readonly idleTimeout: number | undefined
  readonly late: LatePolicy
  readonly scheduler: SchedulerLike
}

/** Checks the options shared by the window operators and applies their defaults. */
export function windowConfig<T>(options: WindowOptions<T, LatePolicy>): WindowConfig<T> {
  const grace = options.grace ?? 0
  const maxMessages = options.maxMessages ?? Number.POSITIVE_INFINITY
  const maxOpenMessages = options.maxOpenMessages ?? Number.POSITIVE_INFINITY
  requireNonNegative('grace', grace)
  requireCount('maxMessages', maxMessages)
  requireCount('maxOpenMessages', maxOpenMessages)
  if (options.idleTimeout !== undefined) requirePositive('idleTimeout', options.idleTimeout)
  return {
    key: options.key ?? (() => ''),
    timestamp: options.timestamp ?? eventTimestamp,
    grace,
    maxMessages,
    maxOpenMessages,
    idleTimeout: options.idleTimeout,
    late: options.late ?? 'deadLetter',
    scheduler: options.scheduler ?? asyncScheduler,
  }
}

function closesFirst<T>(a: HeapEntry<T>, b: HeapEntry<T>): boolean {
  if (a.closeAt !== b.closeAt) return a.closeAt < b.closeAt
  if (a.start !== b.start) return a.start < b.start
  return a.seq < b.seq
}

/** One subscription of a window operator. */
class WindowEngine<T extends Settleable> implements WindowBook<T> {
  readonly #config: WindowConfig<T>
  readonly #placement: Placement<T>
  readonly #subscriber: Subscriber<Window<T> | Late<T>>
  readonly #clock: StreamClock
  readonly #timer: IdleTimer
  readonly #closing = new MinHeap<HeapEntry<T>>(closesFirst)
  readonly #held = new Map<T, Held<T>>()
  #arrivals = 0
  #windows = 0
  #stopped = false
  /** `maxOpenMessages`, lowered to the smallest credit limit seen on the messages. */
  #maxOpen: number

  constructor(config: WindowConfig<T>, placement: Placement<T>, subscriber: Subscriber<Window<T> | Late<T>>) {
    this.#config = config
    this.#maxOpen = config.maxOpenMessages
    this.#placement = placement
    this.#subscriber = subscriber
    this.#clock = new StreamClock(config.scheduler, config.idleTimeout)
    this.#timer = new IdleTimer(config.scheduler, () => {
      this.#closeDue()
      this.#arm()
    })
  }

  next(value: T): void {
    let key: string
    let time: number
    try {
      key = this.#config.key(value)
      time = this.#config.timestamp(value)
    } catch (error) {
      this.#subscriber.error(error)
      return
    }
    if (!Number.isFinite(time)) {
      quietly(new Share(value).deadLetter(new RangeError(`invalid event time ${time} for a window`)))
      return
    }
    this.#maxOpen = Math.min(this.#maxOpen, creditLimitOf(value) ?? Number.POSITIVE_INFINITY)
    this.#clock.observe(time)
    this.#closeDue()
    if (this.#stopped) return
    const streamTime = this.#clock.now()
    const windows = this.#placement.place(key, time, streamTime, this.#config.grace, this) as readonly MutableWindow<T>[]
    if (windows.length === 0) this.#late(value, key, time, streamTime)
    else this.#add(value, windows)
    this.#guardCredit()
    this.#arm()
  }

  complete(): void {
    this.#clock.end()
    this.#closeDue()
    this.#timer.cancel()
    if (!this.#stopped) this.#subscriber.complete()
  }

  /**
   * Unsubscribe or error: nothing is settled, so the held messages are
   * redelivered; their holds are released, so the consumer timeout applies
   * again if their subscription lives on.
   */
  stop(): void {
    this.#stopped = true
    this.#timer.cancel()
    const now = this.#config.scheduler.now()
    for (const message of this.#held.keys()) releaseHold(message, now)
    this.#held.clear()
  }

  open(key: string, start: number, end: number): OpenWindow<T> {
    const window: MutableWindow<T> = {
      key,
      start,
      end,
      messages: [],
      closeAt: end + this.#config.grace,
      seq: this.#windows++,
      version: 0,
      open: true,
    }
    this.#enqueue(window)
    return window
  }

  resize(open: OpenWindow<T>, start: number, end: number): void {
    const window = open as MutableWindow<T>
    if (window.start === start && window.end === end) return
    window.start = start
    window.end = end
    window.closeAt = end + this.#config.grace
    window.version += 1
    this.#enqueue(window)
  }

  merge(openInto: OpenWindow<T>, openFrom: OpenWindow<T>): void {
    const into = openInto as MutableWindow<T>
    const from = openFrom as MutableWindow<T>
    from.open = false
    this.#placement.detach(from)
    const arrival = (message: T): number => this.#held.get(message)?.arrival ?? 0
    into.messages = [...into.messages, ...from.messages].sort((a, b) => arrival(a) - arrival(b))
  }

  #enqueue(window: MutableWindow<T>): void {
    this.#closing.push({ closeAt: window.closeAt, start: window.start, seq: window.seq, version: window.version, window })
  }

  /** The open window that closes first, dropping outdated heap entries. */
  #first(): MutableWindow<T> | undefined {
    for (;;) {
      const entry = this.#closing.peek()
      if (entry === undefined) return undefined
      if (entry.window.open && entry.version === entry.window.version) return entry.window
      this.#closing.pop()
    }
  }

  #add(value: T, windows: readonly MutableWindow<T>[]): void {
    let held = this.#held.get(value)
    if (held === undefined) {
      held = { windows: 0, share: new Share(value), arrival: this.#arrivals++ }
      this.#held.set(value, held)
      holdOpen(value)
    }
    held.windows += windows.length
    for (const window of windows) window.messages.push(value)
    for (const window of windows) {
      if (this.#stopped) return
      if (window.open && window.messages.length >= this.#config.maxMessages) this.#emit(window, true)
    }
  }

  #late(value: T, key: string, time: number, streamTime: number): void {
    switch (this.#config.late) {
      case 'emit':
        this.#subscriber.next(new LateValue(key, time, streamTime, value))
        break
      case 'ack':
        quietly(new Share(value).ack())
        break
      case 'deadLetter':
        quietly(new Share(value).deadLetter(new LateEventError(key, time, streamTime)))
        break
    }
  }

  #closeDue(): void {
    const streamTime = this.#clock.now()
    for (;;) {
      if (this.#stopped) return
      const window = this.#first()
      if (window === undefined || window.closeAt > streamTime) return
      this.#emit(window, false)
    }
  }

  /** Emits the windows closing first, early, while open windows hold `maxOpenMessages` messages or more. */
  #guardCredit(): void {
    while (!this.#stopped && this.#held.size >= this.#maxOpen) {
      const window = this.#first()
      if (window === undefined) return
      this.#emit(window, true)
    }
  }

  #emit(window: MutableWindow<T>, early: boolean): void {
    window.open = false
    this.#placement.detach(window)
    // The window's shares are taken before the engine lets go of its own, so
    // no message is acked while a result still holds it.
    const result = new WindowValue(window.key, window.start, window.end, Object.freeze(window.messages), early)
    const now = this.#config.scheduler.now()
    for (const message of window.messages) {
      const held = this.#held.get(message)
      if (held === undefined) continue
      held.windows -= 1
      if (held.windows === 0) {
        this.#held.delete(message)
        releaseHold(message, now)
        quietly(held.share.ack())
      }
    }
    this.#subscriber.next(result)
  }

  #arm(): void {
    if (this.#stopped || this.#config.idleTimeout === undefined) return
    const window = this.#first()
    this.#timer.arm(window === undefined ? undefined : this.#clock.delayUntil(window.closeAt))
  }
}

/**
 * Builds a window operator from its options and a placement factory (one
 * placement per subscription).
 */
export function windowOperator<T extends Settleable>(
  options: WindowOptions<T, LatePolicy>,
  placement: () => Placement<T>,
): OperatorFunction<T, Window<T> | Late<T>> {
  const config = windowConfig(options)
  return (source) =>
    new Observable<Window<T> | Late<T>>((subscriber) => {
      const engine = new WindowEngine(config, placement(), subscriber)
      const subscription = source.subscribe({
        next: (value) => engine.next(value),
        error: (error: unknown) => {
          engine.stop()
          subscriber.error(error)
        },
        complete: () => engine.complete(),
      })
      return () => {
        engine.stop()
        subscription.unsubscribe()
      }
    })
}

/**
 * Fixed, epoch-aligned windows of `size` ms starting every `advance` ms
 * (tumbling when they are equal). A message belongs to every window whose
 * `[start, end)` holds its time and that is still open.
 */
export function fixedWindows<T>(size: number, advance: number): () => Placement<T> {
  return () => {
    const byKey = new Map<string, Map<number, OpenWindow<T>>>()
    return {
      place(key, time, streamTime, grace, book) {
        const placed: OpenWindow<T>[] = []
        const last = Math.floor(time / advance)
        for (let k = Math.floor((time - size) / advance) + 1; k <= last; k++) {
          const start = k * advance
          const end = start + size
          if (start > time || end <= time || end + grace <= streamTime) continue
          let windows = byKey.get(key)
          if (windows === undefined) {
            windows = new Map()
            byKey.set(key, windows)
          }
          let window = windows.get(start)
          if (window === undefined) {
            window = book.open(key, start, end)
            windows.set(start, window)
          }
          placed.push(window)
        }
        return placed
      },
      detach(window) {
        const windows = byKey.get(window.key)
        if (windows?.get(window.start) === window) {
          windows.delete(window.start)
          if (windows.size === 0) byKey.delete(window.key)
        }
      },
    }
  }
}
