import { asyncScheduler, Observable, type OperatorFunction, type SchedulerLike, type Subscriber } from 'rxjs'
import { CompositeSettleable, creditLimitOf, holdOpen, releaseHold, Share } from '../src/shared-settlement.js'
import type { Settleable } from '../src/settle.js'
import {
  eventTimestamp,
  IdleTimer,
  MinHeap,
  quietly,
  requireCount,
  requireNonNegative,
  requirePositive,
  StreamClock,
} from './internal/window-engine.js'
import {
  LateEventError,
  UnmatchedJoinError,
  type JoinedPair,
  type JoinResult,
  type JoinType,
  type Timestamped,
} from './window-types.js'

/** Options of {@link joinWithin}. */
export interface JoinWithinOptions<L, R, J extends JoinType = 'inner'> {
  /** The join key of a left (source) event. */
  readonly leftKey: (left: L) => string
  /** The join key of a right (`other$`) event. */
  readonly rightKey: (right: R) => string
  /** Two events pair when their keys are equal and their event times at most this many ms apart (inclusive). */
  readonly within: number
  /** `'inner'` (default): pairs only; `'left'`: also unmatched left events; `'outer'`: also unmatched events of both sides. */
  readonly type?: J
  /**
   * Allowed lateness in ms: an event more than `grace` behind stream time is
   * late (see `late`); an unmatched event is settled or emitted once stream
   * time passes its time + `within` + `grace`. Default 0.
   */
  readonly grace?: number
  /** Event time of a left event, in ms. Default: `left.event.timestamp` (required when L has no `event`). */
  readonly leftTimestamp?: (left: L) => number
  /** Event time of a right event, in ms. Default: `right.event.timestamp` (required when R has no `event`). */
  readonly rightTimestamp?: (right: R) => number
  /** Unmatched events that are not emitted (all with `'inner'`, right ones with `'left'`): `'ack'` (default) or `'deadLetter'`. */
  readonly unmatched?: 'ack' | 'deadLetter'
  /** Late events (more than `grace` behind stream time): `'deadLetter'` (default) or `'ack'`. */
  readonly late?: 'deadLetter' | 'ack'
  /**
   * Most messages each side may hold in the join buffer. On reaching it, the
   * side's oldest buffered event is expired early (settled or emitted as
   * unmatched, and so possibly missing a partner), so a full credit never
   * deadlocks the join. Set it to the `maxPendingMessages` of that side's
   * subscription or lower. Default: the credit limit carried by that side's
   * messages (`creditLimit`), else no limit.
   */
  readonly maxOpenMessages?: number
  /** Idle advancement in ms of scheduler time, as for windows: stream time follows the clock once it has not moved for this long. */
  readonly idleTimeout?: number
  /** Scheduler for idle advancement and `now()` (tests pass a `TestScheduler`). Default `asyncScheduler`. */
  readonly scheduler?: SchedulerLike
}

/** Requires the timestamp option `K` when values of type V carry no `event.timestamp`. */
type TimestampOption<K extends string, V> = V extends Timestamped
  ? { readonly [P in K]?: (value: V) => number }
  : { readonly [P in K]: (value: V) => number }

type Side = 'left' | 'right'

interface Buffered {
  readonly side: Side
  readonly value: Settleable
  readonly key: string
  readonly time: number
  /** Expires when stream time passes this: time + within + grace. */
  readonly expireAt: number
  readonly seq: number
  /** The buffer's share, released on expiry. */
  readonly share: Share
  matched: boolean
  live: boolean
}

class Pair<L, R> extends CompositeSettleable implements JoinedPair<L, R> {
  readonly kind = 'joined' as const
  readonly key: string
  readonly left: L
  readonly right: R
  readonly timestamp: number

  constructor(key: string, left: L, right: R, timestamp: number) {
    const shares: Share[] = []
    if (left !== undefined) shares.push(new Share(left as Settleable))
    if (right !== undefined) shares.push(new Share(right as Settleable))
    super(shares)
    this.key = key
    this.left = left
    this.right = right
    this.timestamp = timestamp
  }
}

interface JoinConfig {
  readonly key: Record<Side, (value: Settleable) => string>
  readonly time: Record<Side, (value: Settleable) => number>
  readonly within: number
  readonly grace: number
  readonly emitsUnmatched: Record<Side, boolean>
  readonly unmatched: 'ack' | 'deadLetter'
  readonly late: 'deadLetter' | 'ack'
  readonly maxOpenMessages: number
  readonly idleTimeout: number | undefined
  readonly scheduler: SchedulerLike
}

const expiresFirst = (a: Buffered, b: Buffered): boolean => (a.expireAt !== b.expireAt ? a.expireAt < b.expireAt : a.seq < b.seq)

/** One subscription of joinWithin. */
class JoinEngine {
  readonly #config: JoinConfig
  readonly #subscriber: Subscriber<JoinedPair<unknown, unknown>>
  readonly #clock: StreamClock
  readonly #timer: IdleTimer
  readonly #buffers: Record<Side, Map<string, Set<Buffered>>> = { left: new Map(), right: new Map() }
  readonly #counts: Record<Side, number> = { left: 0, right: 0 }
  readonly #expiring: Record<Side, MinHeap<Buffered>> = { left: new MinHeap(expiresFirst), right: new MinHeap(expiresFirst) }
  readonly #done: Record<Side, boolean> = { left: false, right: false }
  /** `maxOpenMessages` per side, lowered to the smallest credit limit seen on that side. */
  readonly #maxOpen: Record<Side, number>
  #seq = 0
  #stopped = false

  constructor(config: JoinConfig, subscriber: Subscriber<JoinedPair<unknown, unknown>>) {
    this.#config = config
    this.#subscriber = subscriber
    this.#maxOpen = { left: config.maxOpenMessages, right: config.maxOpenMessages }
    this.#clock = new StreamClock(config.scheduler, config.idleTimeout)
    this.#timer = new IdleTimer(config.scheduler, () => {
      this.#expireDue()
      this.#arm()
    })
  }

  next(side: Side, value: Settleable): void {
    let key: string
    let time: number
    try {
      key = this.#config.key[side](value)
      time = this.#config.time[side](value)
    } catch (error) {
      this.#subscriber.error(error)
      return
    }
    if (!Number.isFinite(time)) {
      quietly(new Share(value).deadLetter(new RangeError(`invalid event time ${time} for a join`)))
      return
    }
    this.#maxOpen[side] = Math.min(this.#maxOpen[side], creditLimitOf(value) ?? Number.POSITIVE_INFINITY)
    const streamTime = this.#clock.now()
    if (time + this.#config.grace < streamTime) {
      const share = new Share(value)
      quietly(this.#config.late === 'ack' ? share.ack() : share.deadLetter(new LateEventError(key, time, streamTime)))
      return
    }
    this.#clock.observe(time)
    this.#expireDue()
    if (this.#stopped) return
    const entry = this.#buffer(side, value, key, time)
    const other: Side = side === 'left' ? 'right' : 'left'
    for (const partner of this.#buffers[other].get(key) ?? []) {
      // Emitting may unsubscribe (take(1)): stop there.
      if (this.#subscriber.closed) return
      // A partner buffered during this loop (a synchronous source) pairs with this event itself.
      if (!partner.live || partner.seq > entry.seq || Math.abs(partner.time - time) > this.#config.within) continue
      partner.matched = true
      entry.matched = true
      const [left, right] = side === 'left' ? [value, partner.value] : [partner.value, value]
      this.#subscriber.next(new Pair(key, left, right, Math.max(time, partner.time)))
    }
    this.#guardCredit(side)
    this.#arm()
  }

  complete(side: Side): void {
    this.#done[side] = true
    if (!this.#done.left || !this.#done.right) return
    this.#clock.end()
    this.#expireDue()
    this.#timer.cancel()
    if (!this.#stopped) this.#subscriber.complete()
  }

  /**
   * Unsubscribe or error: nothing is settled, so the buffered messages are
   * redelivered; their holds are released, so the consumer timeout applies
   * again if their subscription lives on.
   */
  stop(): void {
    if (this.#stopped) return
    this.#stopped = true
    this.#timer.cancel()
    const now = this.#config.scheduler.now()
    for (const side of ['left', 'right'] as const) {
      for (const entries of this.#buffers[side].values()) for (const entry of entries) releaseHold(entry.value, now)
      this.#buffers[side].clear()
    }
  }

  /** Buffers an event before any pair is emitted, so no pair settled at once acks a message still waiting for partners. */
  #buffer(side: Side, value: Settleable, key: string, time: number): Buffered {
    const entry: Buffered = {
      side,
      value,
      key,
      time,
      expireAt: time + this.#config.within + this.#config.grace,
      seq: this.#seq++,
      share: new Share(value),
      matched: false,
      live: true,
    }
    holdOpen(value)
    let entries = this.#buffers[side].get(key)
    if (entries === undefined) {
      entries = new Set()
      this.#buffers[side].set(key, entries)
    }
    entries.add(entry)
    this.#counts[side] += 1
    this.#expiring[side].push(entry)
    return entry
  }

  /** The buffered event of `side` that expires first (dropping expired heap entries). */
  #first(side: Side): Buffered | undefined {
    const heap = this.#expiring[side]
    for (;;) {
      const entry = heap.peek()
      if (entry === undefined || entry.live) return entry
      heap.pop()
    }
  }

  #next(): Buffered | undefined {
    const left = this.#first('left')
    const right = this.#first('right')
    if (left === undefined) return right
    if (right === undefined) return left
    return expiresFirst(left, right) ? left : right
  }

  #expireDue(): void {
    const streamTime = this.#clock.now()
    for (;;) {
      if (this.#stopped) return
      const entry = this.#next()
      if (entry === undefined || !(streamTime > entry.expireAt)) return
      this.#expire(entry)
    }
  }

  #guardCredit(side: Side): void {
    while (!this.#stopped && this.#counts[side] >= this.#maxOpen[side]) {
      const entry = this.#first(side)
      if (entry === undefined) return
      this.#expire(entry)
    }
  }

  /** Expires `entry`, which is the first of its side's heap. */
  #expire(entry: Buffered): void {
    entry.live = false
    this.#expiring[entry.side].pop()
    this.#counts[entry.side] -= 1
    const entries = this.#buffers[entry.side].get(entry.key)
    entries?.delete(entry)
    if (entries?.size === 0) this.#buffers[entry.side].delete(entry.key)
    releaseHold(entry.value, this.#config.scheduler.now())
    if (entry.matched) {
      quietly(entry.share.ack())
    } else if (this.#config.emitsUnmatched[entry.side]) {
      // The result takes its share before the buffer lets go of its own.
      const result =
        entry.side === 'left'
          ? new Pair(entry.key, entry.value, undefined, entry.time)
          : new Pair(entry.key, undefined, entry.value, entry.time)
      quietly(entry.share.ack())
      this.#subscriber.next(result)
    } else if (this.#config.unmatched === 'deadLetter') {
      quietly(entry.share.deadLetter(new UnmatchedJoinError(entry.key, entry.time, this.#config.within)))
    } else {
      quietly(entry.share.ack())
    }
  }

  #arm(): void {
    if (this.#stopped || this.#config.idleTimeout === undefined) return
    const entry = this.#next()
    // Expiry needs stream time strictly past expireAt: wake 1 ms after it.
    this.#timer.arm(entry === undefined ? undefined : this.#clock.delayUntil(entry.expireAt + 1))
  }
}

/**
 * Joins the source (left) with `other$` (right), typically two topics or two
 * groups: events whose keys are equal and whose event times are at most
 * `within` ms apart (inclusive) are emitted as a {@link JoinedPair}, each
 * match once, as soon as its second event arrives. An event stays buffered
 * until stream time (the largest event time seen on either side) passes its
 * time + `within` + `grace`; if it found no partner by then it is emitted with
 * an empty side (`'left'`: left events; `'outer'`: both sides) or settled by
 * `unmatched`. Because an event more than `grace` behind stream time is late
 * (settled by `late`, never joined), an event emitted as unmatched can no
 * longer find a partner: there are no spurious empty-side results. Settling a
 * pair settles both events; an event in several pairs is acked only once all
 * of them are acked and it has left the buffer. When both inputs complete,
 * every buffered event expires; on error or unsubscribe nothing is settled.
 *
 * ## Example
 * ```ts
 * import { joinWithin, handleEach } from 'rx-redis-streams/operators'
 * const payments$ = events.topic('payments').consume({ group: 'order-payments' })
 * events.topic('orders').consume({ group: 'order-payments' }).pipe(
 *   joinWithin(payments$, {
 *     leftKey: (order) => order.event.payload.orderId,
 *     rightKey: (payment) => payment.event.payload.orderId,
 *     within: 10 * 60_000,
 *     type: 'left',
 *     idleTimeout: 30_000,
 *   }),
 *   handleEach((pair) => (pair.right === undefined ? flagUnpaid(pair.left) : confirm(pair.left, pair.right))),
 * ).subscribe()
 * ```
 * @param other$ the right-hand events
 * @param options keys, `within`, join type, grace, timestamps, policies for unmatched and late events
 * @returns an operator from left events to joined pairs
 */
export function joinWithin<L extends Settleable, R extends Settleable, J extends JoinType = 'inner'>(
  other$: Observable<R>,
  options: JoinWithinOptions<L, R, J> & TimestampOption<'leftTimestamp', L> & TimestampOption<'rightTimestamp', R>,
): OperatorFunction<L, JoinResult<L, R, J>> {
  const grace = options.grace ?? 0
  const maxOpenMessages = options.maxOpenMessages ?? Number.POSITIVE_INFINITY
  const type: JoinType = options.type ?? 'inner'
  requireNonNegative('within', options.within)
  requireNonNegative('grace', grace)
  requireCount('maxOpenMessages', maxOpenMessages)
  if (options.idleTimeout !== undefined) requirePositive('idleTimeout', options.idleTimeout)
  const leftTimestamp: (value: L) => number = options.leftTimestamp ?? eventTimestamp
  const rightTimestamp: (value: R) => number = options.rightTimestamp ?? eventTimestamp
  const config: JoinConfig = {
    key: { left: (v) => options.leftKey(v as L), right: (v) => options.rightKey(v as R) },
    time: { left: (v) => leftTimestamp(v as L), right: (v) => rightTimestamp(v as R) },
    within: options.within,
    grace,
    emitsUnmatched: { left: type !== 'inner', right: type === 'outer' },
    unmatched: options.unmatched ?? 'ack',
    late: options.late ?? 'deadLetter',
    maxOpenMessages,
    idleTimeout: options.idleTimeout,
    scheduler: options.scheduler ?? asyncScheduler,
  }
  return (source) =>
    new Observable<JoinResult<L, R, J>>((subscriber) => {
      const engine = new JoinEngine(config, subscriber)
      const fail = (error: unknown): void => {
        engine.stop()
        subscriber.error(error)
      }
      const left = source.subscribe({ next: (v) => engine.next('left', v), error: fail, complete: () => engine.complete('left') })
      const right = other$.subscribe({ next: (v) => engine.next('right', v), error: fail, complete: () => engine.complete('right') })
      return () => {
        engine.stop()
        left.unsubscribe()
        right.unsubscribe()
      }
    })
}
