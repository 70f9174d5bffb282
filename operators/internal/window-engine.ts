import { asyncScheduler, Observable, type OperatorFunction, type SchedulerLike, type Subscriber, type Subscription } from 'rxjs'
import { declareDemand, isWithdrawn, releaseUnhandled } from '../../src/consumer/message.js'
import { CompositeSettleable, creditLimitOf, entryIdOf, holdOpen, isFirstDelivery, releaseHold, Share, sourceIdleOf } from '../../src/shared-settlement.js'
import type { Outcome, Settleable } from '../../src/settle.js'
import {
  LateEventError,
  type Late,
  type LatePolicy,
  type Timestamped,
  type Window,
  type WindowOptions,
} from '../window-types.js'
import { deliveryCountOf, STATE_RETENTION_MS, statePart, stateScopeOf, StepQueue, warnSplitKey, type StateScope } from './operator-state.js'

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
 *
 * It follows the clock only while the source is genuinely idle: when the last
 * message seen carries a {@link sourceIdle} probe (a subscription's messages
 * do), only while the probe says so (nothing left to deliver), never while
 * the pipeline is back-pressured or a read is slow.
 */
export class StreamClock {
  readonly #scheduler: SchedulerLike
  readonly #idleTimeout: number | undefined
  /** The largest event time seen. */
  #eventTime = Number.NEGATIVE_INFINITY
  /** The largest stream time reached by the clock (stream time never goes back). */
  #advanced = Number.NEGATIVE_INFINITY
  /** Scheduler time when stream time last moved by an event. */
  #movedAt = 0
  #ended = false
  #idle: (() => boolean) | undefined

  constructor(scheduler: SchedulerLike, idleTimeout: number | undefined) {
    this.#scheduler = scheduler
    this.#idleTimeout = idleTimeout
  }

  /** Current stream time. */
  now(): number {
    if (this.#ended) return Number.POSITIVE_INFINITY
    if (this.#idleTimeout === undefined || this.#eventTime === Number.NEGATIVE_INFINITY) return this.#eventTime
    const idle = this.#scheduler.now() - this.#movedAt
    if (idle >= this.#idleTimeout && this.#sourceIdle()) this.#advanced = Math.max(this.#advanced, this.#eventTime + idle)
    return Math.max(this.#eventTime, this.#advanced)
  }

  /** Takes in the event time of an arriving value (and its source's idle probe, if it carries one). */
  observe(time: number, value?: unknown): void {
    const probe = sourceIdleOf(value)
    if (probe !== undefined) this.#idle = probe
    if (time > this.now()) {
      this.#eventTime = time
      this.#movedAt = this.#scheduler.now()
    }
  }

  /** Restores a remembered stream time (after a restart): stream time is at least `time` from now on. */
  restore(time: number): void {
    if (time > this.#eventTime) {
      this.#eventTime = time
      this.#movedAt = this.#scheduler.now()
    }
  }

  /** End of input: stream time becomes +Infinity, so everything closes. */
  end(): void {
    this.#ended = true
  }

  get ended(): boolean {
    return this.#ended
  }

  #sourceIdle(): boolean {
    const probe = this.#idle
    if (probe === undefined) return true
    try {
      return probe()
    } catch {
      return false
    }
  }

  /**
   * Scheduler delay (ms) until stream time reaches `target` with no further
   * events; undefined without idle advancement. While the source is not idle,
   * the delay to look again (`idleTimeout`).
   */
  delayUntil(target: number): number | undefined {
    const idleTimeout = this.#idleTimeout
    if (idleTimeout === undefined || !Number.isFinite(this.#eventTime) || this.#ended) return undefined
    const due = this.#movedAt + Math.max(idleTimeout, target - this.#eventTime)
    const delay = Math.max(0, due - this.#scheduler.now())
    if (delay === 0 && this.now() < target) return idleTimeout
    return delay
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
  readonly partial: boolean
  /** Runs before the first ack reaches the messages (records the window as settled). */
  #beforeAck: (() => Promise<void>) | undefined
  #acking: Promise<Outcome> | undefined

  constructor(key: string, start: number, end: number, messages: readonly T[], early: boolean, partial: boolean) {
    super(messages.map((message) => new Share(message)))
    this.key = key
    this.start = start
    this.end = end
    this.messages = messages
    this.early = early
    this.partial = partial
  }

  /** @internal */
  set beforeAck(hook: () => Promise<void>) {
    this.#beforeAck = hook
  }

  override ack(): Promise<Outcome> {
    const hook = this.#beforeAck
    if (hook === undefined || this.outcome !== undefined) return super.ack()
    this.#acking ??= hook()
      .catch(() => undefined)
      .then(() => super.ack())
    return this.#acking
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

/**
 * The identity of a value inside one operator: its stream entry (topic, group,
 * stream id) when it is one, so that a redelivered copy or a second view of
 * an entry is the same entry; else the object itself.
 */
export function identityOf(value: object): unknown {
  return entryIdOf(value) ?? value
}

/** The subscription a message draws credit from (topic, group, consumer), or undefined for other values. */
export function creditPoolOf(value: unknown): string | undefined {
  if (value === null || typeof value !== 'object') return undefined
  const consumer = (value as { readonly consumer?: unknown }).consumer
  const entry = entryIdOf(value)
  if (entry === undefined || typeof consumer !== 'string') return undefined
  const v = value as { readonly topic: string; readonly group: string }
  return `${v.topic}\u0000${v.group}\u0000${consumer}`
}

/** True when the operator stops because its subscription stops gracefully (close()): a held message is withdrawn. */
export function stoppingGracefully(held: Iterable<unknown>): boolean {
  for (const value of held) if (isWithdrawn(value)) return true
  return false
}

/**
 * Gives held messages back at once (graceful stop): their holds end, they
 * leave the credit unsettled and stay pending for a replay.
 */
export function giveBack(values: Iterable<Settleable>, nowMs: number): void {
  for (const value of values) {
    releaseHold(value, nowMs)
    releaseUnhandled(value)
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
  /** Opens again a window that was emitted but not settled before a restart, to collect its replayed messages. */
  reopen(key: string, start: number, end: number): OpenWindow<T>
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
  place(key: string, time: number, streamTime: number, grace: number, book: WindowBook<T>, decide?: WindowDecision): readonly OpenWindow<T>[]
  /** Forgets a window that is emitted or merged away. */
  detach(window: OpenWindow<T>): void
  /** The bounds of the windows an event time belongs to, when they are fixed (not sessions): for the state of a replayed entry. */
  bounds?(time: number): readonly (readonly [start: number, end: number])[]
}

/**
 * What the remembered state says of one window of a replayed entry: `'skip'`
 * (emitted and settled: its work is done), `'reopen'` (emitted but not
 * settled: collect it again, even though it closed), `'normal'`.
 */
export type WindowDecision = (start: number, end: number) => 'skip' | 'reopen' | 'normal'

interface MutableWindow<T> extends OpenWindow<T> {
  start: number
  end: number
  messages: T[]
  closeAt: number
  readonly seq: number
  version: number
  open: boolean
  /** A window reopened for a replay: emitted again once it holds this many messages (what it held when first emitted). */
  target: number | undefined
}

interface HeapEntry<T> {
  readonly closeAt: number
  readonly start: number
  readonly seq: number
  readonly version: number
  readonly window: MutableWindow<T>
}

interface Held<T extends Settleable> {
  /** The copy of the entry the windows hold (the latest delivery that arrived). */
  value: T
  /** Open windows holding the entry. */
  readonly windows: Set<MutableWindow<T>>
  /** The engine's share, released when no open window holds the entry any more. */
  share: Share
  /** Arrival order, to keep merged sessions in arrival order. */
  readonly arrival: number
}

/** Window options with defaults applied. */
interface WindowConfig<T> {
  /** The operator's name in its remembered state. */
  readonly name: string
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
export function windowConfig<T>(options: WindowOptions<T, LatePolicy>, defaultName: string): WindowConfig<T> {
  const grace = options.grace ?? 0
  const maxMessages = options.maxMessages ?? Number.POSITIVE_INFINITY
  const maxOpenMessages = options.maxOpenMessages ?? Number.POSITIVE_INFINITY
  requireNonNegative('grace', grace)
  requireCount('maxMessages', maxMessages)
  requireCount('maxOpenMessages', maxOpenMessages)
  if (options.idleTimeout !== undefined) requirePositive('idleTimeout', options.idleTimeout)
  return {
    name: options.name ?? defaultName,
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

/** The remembered state of one topic and group, as far as loaded. */
interface ScopeState {
  /** The closed-window watermark remembered (-Infinity: none). */
  watermark: number
  /** Set while it is being read. */
  loading: Promise<void> | undefined
}

/** The state field of a window. */
function windowField(key: string, start: number, end: number): string {
  return `${key}\u0000${start}\u0000${end}`
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
  /** Held entries by identity (one per stream entry, whatever copy or view arrived). */
  readonly #held = new Map<unknown, Held<T>>()
  /** Open windows per key, to emit a key's windows in window order. */
  readonly #openByKey = new Map<string, Set<MutableWindow<T>>>()
  /** Credit pools the operator declared its demand to. */
  readonly #declared = new Set<string>()
  /** Steps in arrival order, some waiting for a state lookup. */
  readonly #steps = new StepQueue()
  /** Remembered-state scopes (topic and group) loaded: their watermark restored. */
  readonly #scopes = new Map<string, ScopeState>()
  /** Message counts of the windows to reopen (emitted, not settled), by window field. */
  readonly #targets = new Map<string, number>()
  #arrivals = 0
  #windows = 0
  #stopped = false
  /** A method, not a field read, so checks after emitting (which may unsubscribe) are not narrowed away. */
  #isStopped(): boolean {
    return this.#stopped
  }
  /** `maxOpenMessages`, lowered to the smallest credit limit seen on the messages. */
  #maxOpen: number

  constructor(config: WindowConfig<T>, placement: Placement<T>, subscriber: Subscriber<Window<T> | Late<T>>) {
    this.#config = config
    this.#maxOpen = config.maxOpenMessages
    this.#placement = placement
    this.#subscriber = subscriber
    this.#clock = new StreamClock(config.scheduler, config.idleTimeout)
    this.#timer = new IdleTimer(config.scheduler, () => {
      this.#closeDue(false)
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
    const scope = stateScopeOf(value)
    if (scope === undefined) {
      this.#steps.push(() => this.#process(value, key, time, undefined))
      return
    }
    const state = this.#load(scope)
    const bounds = this.#placement.bounds?.(time) ?? []
    // A replay (crash, restart, claim, nack) of an entry whose windows may have been emitted: at or behind the
    // remembered watermark (a message given back keeps its delivery count), or delivered before. Never a first
    // delivery (read as new): no window emitted before held it, though another consumer of the group, or an earlier
    // run, may have emitted and settled another part of its window, and moved the watermark past it.
    const replay = (): boolean => !isFirstDelivery(value) && (deliveryCountOf(value) > 1 || time <= state.watermark)
    if (bounds.length === 0 || (state.loading === undefined && !replay())) {
      this.#steps.push(() => this.#process(value, key, time, undefined), state.loading)
      return
    }
    const records = new Map<string, string | null>()
    let looked = false
    const lookup = (state.loading ?? Promise.resolve()).then(async () => {
      if (!replay()) return
      looked = true
      await this.#readWindows(scope, key, bounds, records)
    })
    this.#steps.push(() => this.#process(value, key, time, looked ? records : undefined), lookup)
  }

  /** Restores the closed-window watermark of a scope, once; `loading` until it is read. */
  #load(scope: StateScope): ScopeState {
    const known = this.#scopes.get(scope.id)
    if (known !== undefined) return known
    const state: ScopeState = { watermark: Number.NEGATIVE_INFINITY, loading: undefined }
    state.loading = scope.store
      .operatorStateRead(scope.topic, scope.group, this.#config.name, 'meta', ['wm'])
      .then(([wm]) => {
        const watermark = Number(wm)
        if (wm !== null && wm !== undefined && Number.isFinite(watermark)) {
          state.watermark = watermark
          this.#clock.restore(watermark)
        }
      })
      .catch(() => undefined)
      .finally(() => (state.loading = undefined))
    this.#scopes.set(scope.id, state)
    return state
  }

  async #readWindows(scope: StateScope, key: string, bounds: readonly (readonly [number, number])[], into: Map<string, string | null>): Promise<void> {
    const parts = new Map<string, string[]>()
    for (const [start, end] of bounds) {
      const part = statePart('w', end)
      const fields = parts.get(part) ?? []
      fields.push(windowField(key, start, end))
      parts.set(part, fields)
    }
    await Promise.all(
      [...parts].map(async ([part, fields]) => {
        const values = await scope.store.operatorStateRead(scope.topic, scope.group, this.#config.name, part, fields)
        fields.forEach((field, i) => into.set(field, values[i] ?? null))
      }),
    ).catch(() => undefined)
  }

  #process(value: T, key: string, time: number, records: Map<string, string | null> | undefined): void {
    if (this.#stopped) return
    let decide: WindowDecision | undefined
    if (records !== undefined) {
      const bounds = this.#placement.bounds?.(time) ?? []
      let settled = 0
      for (const [start, end] of bounds) {
        const field = windowField(key, start, end)
        const record = records.get(field)
        if (record?.startsWith('s:') === true) settled++
        else if (record?.startsWith('e:') === true) this.#targets.set(field, Number(record.split(':')[1]) || 1)
      }
      if (bounds.length > 0 && settled === bounds.length) {
        // Every window of this entry was emitted and settled before: its work is done.
        quietly(new Share(value).ack())
        return
      }
      decide = (start, end) => {
        const record = records.get(windowField(key, start, end))
        return record?.startsWith('s:') === true ? 'skip' : record?.startsWith('e:') === true ? 'reopen' : 'normal'
      }
    }
    this.#declare(value)
    this.#maxOpen = Math.min(this.#maxOpen, creditLimitOf(value) ?? Number.POSITIVE_INFINITY)
    this.#clock.observe(time, value)
    this.#closeDue(false)
    if (this.#isStopped()) return
    const streamTime = this.#clock.now()
    const windows = this.#placement.place(key, time, streamTime, this.#config.grace, this, decide) as readonly MutableWindow<T>[]
    if (windows.length === 0) this.#late(value, key, time, streamTime)
    else this.#add(value, windows)
    this.#guardCredit()
    this.#arm()
  }

  /**
   * The source completed. When it completed because its subscription stops
   * gracefully (close(): the held messages are withdrawn), what the open
   * windows hold is given back, unsettled and not emitted, so a restart
   * replays it whole. Otherwise every open window is flushed, flagged `partial`.
   */
  complete(): void {
    this.#steps.push(() => this.#complete())
  }

  #complete(): void {
    if (this.#stopped) return
    if (stoppingGracefully([...this.#held.values()].map((held) => held.value))) {
      this.#giveBack()
      this.#subscriber.complete()
      return
    }
    this.#clock.end()
    this.#closeDue(true)
    this.#timer.cancel()
    if (!this.#isStopped()) this.#subscriber.complete()
  }

  /**
   * Unsubscribe or error: nothing is settled, so the held messages are
   * redelivered; their holds are released, so the consumer timeout applies
   * again if their subscription lives on.
   */
  stop(): void {
    this.#stopped = true
    this.#steps.close()
    this.#timer.cancel()
    const now = this.#config.scheduler.now()
    for (const held of this.#held.values()) {
      releaseHold(held.value, now)
      quietly(held.share.abandon())
    }
    this.#held.clear()
    this.#openByKey.clear()
  }

  #giveBack(): void {
    this.#stopped = true
    this.#timer.cancel()
    const values = [...this.#held.values()]
    this.#held.clear()
    this.#openByKey.clear()
    for (const held of values) quietly(held.share.abandon())
    giveBack(
      values.map((held) => held.value),
      this.#config.scheduler.now(),
    )
  }

  /** Tells the value's subscription how many messages this operator may hold (its credit then covers them). */
  #declare(value: T): void {
    if (!Number.isFinite(this.#config.maxOpenMessages)) return
    const pool = creditPoolOf(value) ?? ''
    if (this.#declared.has(pool)) return
    this.#declared.add(pool)
    declareDemand(value, this, this.#config.maxOpenMessages)
  }

  reopen(key: string, start: number, end: number): OpenWindow<T> {
    const window = this.open(key, start, end) as MutableWindow<T>
    const field = windowField(key, start, end)
    window.target = this.#targets.get(field) ?? 1
    this.#targets.delete(field)
    // Emitted when it holds what it held before (see #add), or on completion.
    window.closeAt = Number.POSITIVE_INFINITY
    window.version += 1
    this.#enqueue(window)
    return window
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
      target: undefined,
    }
    let open = this.#openByKey.get(key)
    if (open === undefined) {
      open = new Set()
      this.#openByKey.set(key, open)
    }
    open.add(window)
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
    this.#forget(from)
    const arrival = (message: T): number => this.#held.get(identityOf(message))?.arrival ?? 0
    for (const message of from.messages) {
      const held = this.#held.get(identityOf(message))
      if (held === undefined) continue
      held.windows.delete(from)
      held.windows.add(into)
    }
    const ids = new Set(into.messages.map(identityOf))
    into.messages = [...into.messages, ...from.messages.filter((m) => !ids.has(identityOf(m)))].sort((a, b) => arrival(a) - arrival(b))
  }

  #forget(window: MutableWindow<T>): void {
    this.#placement.detach(window)
    const open = this.#openByKey.get(window.key)
    open?.delete(window)
    if (open?.size === 0) this.#openByKey.delete(window.key)
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

  /**
   * Adds a value to its open windows. A window holds each stream entry once:
   * a redelivered copy (or another view) of an entry already held replaces
   * the copy in the windows holding it, and joins only the windows that do
   * not hold the entry yet.
   */
  #add(value: T, windows: readonly MutableWindow<T>[]): void {
    const id = identityOf(value)
    let held = this.#held.get(id)
    if (held === undefined) {
      held = { value, windows: new Set(), share: new Share(value), arrival: this.#arrivals++ }
      this.#held.set(id, held)
      holdOpen(value)
    } else if (held.value !== value) {
      const old = held.value
      const oldShare = held.share
      held.value = value
      held.share = new Share(value)
      holdOpen(value)
      for (const window of held.windows) {
        const at = window.messages.indexOf(old)
        if (at >= 0) window.messages[at] = value
      }
      releaseHold(old, this.#config.scheduler.now())
      quietly(oldShare.abandon())
    }
    const added: MutableWindow<T>[] = []
    for (const window of windows) {
      if (held.windows.has(window)) continue
      held.windows.add(window)
      window.messages.push(value)
      added.push(window)
    }
    for (const window of added) {
      if (this.#stopped) return
      if (window.open && window.target !== undefined && window.messages.length >= window.target) this.#emit(window, false, false)
      else if (window.open && window.messages.length >= this.#config.maxMessages) this.#emitEarly(window)
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

  #closeDue(partial: boolean): void {
    const streamTime = this.#clock.now()
    for (;;) {
      if (this.#stopped) return
      const window = this.#first()
      if (window === undefined || window.closeAt > streamTime) return
      this.#emit(window, false, partial)
    }
  }

  /** Emits the windows closing first, early, while open windows hold `maxOpenMessages` messages or more. */
  #guardCredit(): void {
    while (!this.#stopped && this.#held.size >= this.#maxOpen) {
      const window = this.#first()
      if (window === undefined) return
      this.#emitEarly(window)
    }
  }

  /** Emits a window early, after the open windows of its key that start before it (results of a key come out in window order). */
  #emitEarly(window: MutableWindow<T>): void {
    const before = [...(this.#openByKey.get(window.key) ?? [])]
      .filter((other) => other !== window && other.start < window.start)
      .sort((a, b) => a.start - b.start || a.seq - b.seq)
    for (const other of before) {
      if (this.#stopped) return
      if (other.open) this.#emit(other, true, false)
    }
    if (!this.#stopped && window.open) this.#emit(window, true, false)
  }

  #emit(window: MutableWindow<T>, early: boolean, partial: boolean): void {
    window.open = false
    this.#forget(window)
    // The window's shares are taken before the engine lets go of its own, so
    // no message is acked while a result still holds it.
    const result = new WindowValue(window.key, window.start, window.end, Object.freeze([...window.messages]), early, partial)
    const now = this.#config.scheduler.now()
    for (const message of window.messages) {
      const id = identityOf(message)
      const held = this.#held.get(id)
      if (held === undefined) continue
      held.windows.delete(window)
      if (held.windows.size === 0) {
        this.#held.delete(id)
        releaseHold(held.value, now)
        quietly(held.share.ack())
      }
    }
    this.#remember(window, result)
    this.#subscriber.next(result)
  }

  /**
   * Records the emission (and, once the result is acked, the settlement) of
   * a window in the state of each topic and group its messages came from, with
   * the closed-window watermark; warns when another consumer emitted it before.
   */
  #remember(window: MutableWindow<T>, result: WindowValue<T>): void {
    const scopes = new Map<string, StateScope>()
    for (const message of window.messages) {
      const scope = stateScopeOf(message)
      if (scope !== undefined) scopes.set(scope.id, scope)
    }
    if (scopes.size === 0) return
    const name = this.#config.name
    const field = windowField(window.key, window.start, window.end)
    const part = statePart('w', window.end)
    const expireAt = Math.max(Date.now(), window.end) + this.#config.grace + STATE_RETENTION_MS
    const watermark = this.#clock.now()
    const count = window.messages.length
    for (const scope of scopes.values()) {
      scope.store
        .operatorStateWrite(scope.topic, scope.group, name, part, { set: [[field, `e:${count}:${scope.consumer}`]], expireAt })
        .then(([previous]) => {
          const other = previous?.startsWith('e:') === true ? previous.split(':').slice(2).join(':') : previous?.startsWith('s:') === true ? previous.slice(2) : undefined
          if (other !== undefined && other !== scope.consumer) warnSplitKey(name, window.key, window.start, window.end, scope.consumer, other)
        })
        .catch(() => undefined)
      if (Number.isFinite(watermark)) {
        scope.store.operatorStateWrite(scope.topic, scope.group, name, 'meta', { set: [], max: [['wm', watermark]], expireAt }).catch(() => undefined)
      }
    }
    result.beforeAck = async () => {
      await Promise.all(
        [...scopes.values()].map((scope) =>
          scope.store.operatorStateWrite(scope.topic, scope.group, name, part, { set: [[field, `s:${scope.consumer}`]], expireAt }),
        ),
      )
    }
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
  defaultName: string,
): OperatorFunction<T, Window<T> | Late<T>> {
  const config = windowConfig(options, defaultName)
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
      bounds(time) {
        const bounds: [number, number][] = []
        const last = Math.floor(time / advance)
        for (let k = Math.floor((time - size) / advance) + 1; k <= last; k++) {
          const start = k * advance
          if (start <= time && time < start + size) bounds.push([start, start + size])
        }
        return bounds
      },
      place(key, time, streamTime, grace, book, decide) {
        const placed: OpenWindow<T>[] = []
        const last = Math.floor(time / advance)
        for (let k = Math.floor((time - size) / advance) + 1; k <= last; k++) {
          const start = k * advance
          const end = start + size
          if (start > time || end <= time) continue
          const decision = decide?.(start, end) ?? 'normal'
          if (decision === 'skip' || (decision === 'normal' && end + grace <= streamTime)) continue
          let windows = byKey.get(key)
          if (windows === undefined) {
            windows = new Map()
            byKey.set(key, windows)
          }
          let window = windows.get(start)
          if (window === undefined) {
            window = decision === 'reopen' ? book.reopen(key, start, end) : book.open(key, start, end)
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
