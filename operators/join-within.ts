import { asyncScheduler, Observable, type OperatorFunction, type SchedulerLike, type Subscriber } from 'rxjs'
import { CompositeSettleable, creditLimitOf, holdOpen, onFailure, releaseHold, Share } from '../src/shared-settlement.js'
import type { Settleable } from '../src/settle.js'
import { declareDemand } from '../src/consumer/message.js'
import type { Outcome } from '../src/settle.js'
import { deliveryCountOf, STATE_RETENTION_MS, statePart, stateScopeOf, StepQueue, streamIdOf, type StateScope } from './internal/operator-state.js'
import {
  creditPoolOf,
  eventTimestamp,
  giveBack,
  identityOf,
  IdleTimer,
  MinHeap,
  quietly,
  requireCount,
  requireNonNegative,
  requirePositive,
  StreamClock,
  stoppingGracefully,
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
   * Allowed lateness in ms. Each side has its own stream time (the largest
   * event time seen on it), because the two inputs are read independently and
   * one may run ahead of the other. An event is joinable while its own side's
   * stream time is at most `grace` ahead of it and the other side's at most
   * `within + grace` ahead of it; otherwise it is late (see `late`). A
   * buffered event waits for partners until the other side's stream time
   * passes its time + `within` + `grace`; if it found none it is then settled
   * or emitted as unmatched. Default: `within`, so the inputs may drift apart
   * by up to twice `within` without losing a partner.
   */
  readonly grace?: number
  /** Event time of a left event, in ms. Default: `left.event.timestamp` (required when L has no `event`). */
  readonly leftTimestamp?: (left: L) => number
  /** Event time of a right event, in ms. Default: `right.event.timestamp` (required when R has no `event`). */
  readonly rightTimestamp?: (right: R) => number
  /** Unmatched events that are not emitted (all with `'inner'`, right ones with `'left'`): `'ack'` (default) or `'deadLetter'`. */
  readonly unmatched?: 'ack' | 'deadLetter'
  /** Late events (see `grace`): `'deadLetter'` (default) or `'ack'`. */
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
  /**
   * The operator's name in the state it keeps in the store per group (Redis:
   * `event:opstate:{topic}:<group>:<name>:…`, each side under its own topic):
   * which entries matched, so that after a restart a replayed entry that had
   * matched is never emitted as unmatched. Default: derived from `within`,
   * `grace` and `type`; set it when one group runs two such joins.
   */
  readonly name?: string
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

const other = (side: Side): Side => (side === 'left' ? 'right' : 'left')

interface Buffered {
  readonly side: Side
  readonly value: Settleable
  readonly id: unknown
  readonly key: string
  readonly time: number
  /** Expires when the other side's stream time passes this: time + within + grace. */
  readonly expireAt: number
  readonly seq: number
  /** The credit pool (subscription) the message draws on. */
  readonly pool: string
  /** The buffer's share, released on expiry. */
  readonly share: Share
  /** Stops watching the message for a failure. */
  unwatch: () => void
  matched: boolean
  live: boolean
}

/** What one subscription (credit pool) holds in the join buffers. */
interface Pool {
  count: number
  max: number
  readonly heap: MinHeap<Buffered>
}

class Pair<L, R> extends CompositeSettleable implements JoinedPair<L, R> {
  readonly kind = 'joined' as const
  readonly key: string
  readonly left: L
  readonly right: R
  readonly timestamp: number
  readonly partial: boolean
  /** Settles after the match is remembered (so a replay never emits a matched entry as unmatched). */
  remembered: Promise<unknown> | undefined
  #acking: Promise<Outcome> | undefined

  override ack(): Promise<Outcome> {
    const remembered = this.remembered
    if (remembered === undefined || this.outcome !== undefined) return super.ack()
    this.#acking ??= remembered.catch(() => undefined).then(() => super.ack())
    return this.#acking
  }

  constructor(key: string, left: L, right: R, timestamp: number, partial = false) {
    const shares: Share[] = []
    if (left !== undefined) shares.push(new Share(left as Settleable))
    if (right !== undefined) shares.push(new Share(right as Settleable))
    super(shares)
    this.key = key
    this.left = left
    this.right = right
    this.timestamp = timestamp
    this.partial = partial
  }
}

interface JoinConfig {
  readonly name: string
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
  /** Stream time per side: the largest event time seen on that side. */
  readonly #clocks: Record<Side, StreamClock>
  readonly #timer: IdleTimer
  readonly #buffers: Record<Side, Map<string, Set<Buffered>>> = { left: new Map(), right: new Map() }
  /** Buffered entries per side by identity (a stream entry is buffered once). */
  readonly #byId: Record<Side, Map<unknown, Buffered>> = { left: new Map(), right: new Map() }
  readonly #expiring: Record<Side, MinHeap<Buffered>> = { left: new MinHeap(expiresFirst), right: new MinHeap(expiresFirst) }
  readonly #done: Record<Side, boolean> = { left: false, right: false }
  /** What each subscription holds: both sides may draw on one credit (one source split in two). */
  readonly #pools = new Map<string, Pool>()
  #seq = 0
  #stopped = false
  /** A method, not a field read, so checks after emitting (which may unsubscribe) are not narrowed away. */
  #isStopped(): boolean {
    return this.#stopped
  }
  /** Steps in arrival order, some waiting for a state lookup. */
  readonly #steps = new StepQueue()
  /** Remembered state per topic and group, as far as loaded. */
  readonly #scopes = new Map<string, JoinScopeState>()

  constructor(config: JoinConfig, subscriber: Subscriber<JoinedPair<unknown, unknown>>) {
    this.#config = config
    this.#subscriber = subscriber
    this.#clocks = { left: new StreamClock(config.scheduler, config.idleTimeout), right: new StreamClock(config.scheduler, config.idleTimeout) }
    this.#timer = new IdleTimer(config.scheduler, () => {
      this.#expireDue()
      this.#arm()
    })
  }

  next(side: Side, value: Settleable): void {
    const scope = stateScopeOf(value)
    if (scope === undefined) {
      this.#steps.push(() => this.#process(side, value, false))
      return
    }
    let time: number
    try {
      time = this.#config.time[side](value)
    } catch {
      time = Number.NaN
    }
    const state = this.#load(scope)
    // A replay (crash, restart, claim, nack; a message given back keeps its delivery count) of an entry that may
    // have matched: delivered before, or at or behind the side's stream time when the last match was remembered.
    const replay = (): boolean => Number.isFinite(time) && (deliveryCountOf(value) > 1 || time <= state.watermark[side])
    if (state.loading === undefined && !replay()) {
      this.#steps.push(() => this.#process(side, value, false))
      return
    }
    let matched = false
    const lookup = (state.loading ?? Promise.resolve()).then(async () => {
      if (!replay()) return
      const [record] = await scope.store.operatorStateRead(scope.topic, scope.group, this.#config.name, statePart('m', time), [matchField(side, value)])
      matched = record !== null && record !== undefined
    })
    this.#steps.push(() => this.#process(side, value, matched), lookup)
  }

  /** Reads the remembered stream times of a scope's sides, once; `loading` until read. */
  #load(scope: StateScope): JoinScopeState {
    const known = this.#scopes.get(scope.id)
    if (known !== undefined) return known
    const state: JoinScopeState = { watermark: { left: Number.NEGATIVE_INFINITY, right: Number.NEGATIVE_INFINITY }, loading: undefined }
    state.loading = scope.store
      .operatorStateRead(scope.topic, scope.group, this.#config.name, 'meta', ['wm:left', 'wm:right'])
      .then(([left, right]) => {
        for (const [side, wm] of [['left', left], ['right', right]] as const) {
          const watermark = Number(wm)
          if (wm !== null && wm !== undefined && Number.isFinite(watermark)) state.watermark[side] = watermark
        }
      })
      .catch(() => undefined)
      .finally(() => (state.loading = undefined))
    this.#scopes.set(scope.id, state)
    return state
  }

  #process(side: Side, value: Settleable, wasMatched: boolean): void {
    if (this.#stopped) return
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
    const pool = this.#pool(side, value)
    const late = this.#lateness(side, time)
    if (late !== undefined) {
      const share = new Share(value)
      quietly(this.#config.late === 'ack' ? share.ack() : share.deadLetter(new LateEventError(key, time, late)))
      return
    }
    const id = identityOf(value)
    const buffered = this.#byId[side].get(id)
    if (buffered !== undefined) {
      // Another view of a buffered delivery: it is already joined.
      if (buffered.value === value || !isNewerDelivery(value, buffered.value)) return
      // A redelivery of a buffered entry that did not fail (superseded): it replaces it, and pairs again.
      this.#drop(buffered)
    }
    this.#clocks[side].observe(time, value)
    this.#expireDue()
    if (this.#isStopped()) return
    const entry = this.#buffer(side, value, id, key, time, pool)
    if (wasMatched) entry.matched = true
    for (const partner of this.#buffers[other(side)].get(key) ?? []) {
      // Emitting may unsubscribe (take(1)): stop there.
      if (this.#subscriber.closed || !entry.live) return
      // A partner buffered during this loop (a synchronous source) pairs with this event itself.
      if (!partner.live || partner.seq > entry.seq || Math.abs(partner.time - time) > this.#config.within) continue
      partner.matched = true
      entry.matched = true
      const [left, right] = side === 'left' ? [value, partner.value] : [partner.value, value]
      const pair = new Pair(key, left, right, Math.max(time, partner.time))
      pair.remembered = this.#rememberMatch([entry, partner])
      this.#subscriber.next(pair)
    }
    this.#guardCredit(pool)
    this.#expireDue()
    this.#arm()
  }

  /**
   * Stream time of the side when `time` is too late to join, else undefined.
   * An event is joinable while its own side's stream time is at most `grace`
   * ahead of it (out of order within its topic), and its partner side's
   * stream time at most `within + grace` ahead (the partner side keeps its
   * events that long): the two topics are read independently, so one may run
   * ahead of the other by up to `within + grace`.
   */
  #lateness(side: Side, time: number): number | undefined {
    const own = this.#clocks[side].now()
    if (time + this.#config.grace < own) return own
    if (this.#done[other(side)]) return undefined
    const partner = this.#clocks[other(side)].now()
    if (time + this.#config.within + this.#config.grace < partner) return partner
    return undefined
  }

  complete(side: Side): void {
    this.#steps.push(() => this.#complete(side))
  }

  /** Records in the state of each entry's own topic that it matched; undefined when no entry has a store. */
  #rememberMatch(entries: readonly Buffered[]): Promise<unknown> | undefined {
    const writes: Promise<unknown>[] = []
    for (const entry of entries) {
      const scope = stateScopeOf(entry.value)
      if (scope === undefined) continue
      const expireAt = Math.max(Date.now(), entry.time) + 2 * (this.#config.within + this.#config.grace) + STATE_RETENTION_MS
      writes.push(
        scope.store.operatorStateWrite(scope.topic, scope.group, this.#config.name, statePart('m', entry.time), {
          set: [[matchField(entry.side, entry.value), '1']],
          expireAt,
        }),
      )
      // The side's stream time: a replayed entry at or behind it may have matched (and is looked up).
      const watermark = this.#clocks[entry.side].now()
      if (Number.isFinite(watermark)) {
        writes.push(
          scope.store.operatorStateWrite(scope.topic, scope.group, this.#config.name, 'meta', { set: [], max: [[`wm:${entry.side}`, watermark]], expireAt }),
        )
      }
    }
    return writes.length === 0 ? undefined : Promise.all(writes)
  }

  #complete(side: Side): void {
    this.#done[side] = true
    if (this.#stopped) return
    const held = [...this.#byId.left.values(), ...this.#byId.right.values()].map((entry) => entry.value)
    if (stoppingGracefully(held)) {
      // Graceful stop (close()): give back what the buffers hold, unsettled and not emitted.
      if (this.#done.left && this.#done.right) {
        this.#giveBack()
        this.#subscriber.complete()
      }
      return
    }
    // No more events of this side: the other side's events can find no new partner.
    this.#clocks[side].end()
    this.#expireDue()
    if (!this.#done.left || !this.#done.right) return
    this.#timer.cancel()
    // Emitting may have unsubscribed (take(n)).
    if (!this.#subscriber.closed) this.#subscriber.complete()
  }

  /**
   * Unsubscribe or error: nothing is settled, so the buffered messages are
   * redelivered; their holds are released, so the consumer timeout applies
   * again if their subscription lives on.
   */
  stop(): void {
    if (this.#stopped) return
    this.#stopped = true
    this.#steps.close()
    this.#timer.cancel()
    const now = this.#config.scheduler.now()
    for (const entry of this.#clear()) releaseHold(entry.value, now)
  }

  #giveBack(): void {
    this.#stopped = true
    this.#timer.cancel()
    giveBack(
      this.#clear().map((entry) => entry.value),
      this.#config.scheduler.now(),
    )
  }

  #clear(): Buffered[] {
    const entries = [...this.#byId.left.values(), ...this.#byId.right.values()]
    for (const entry of entries) {
      entry.live = false
      entry.unwatch()
      quietly(entry.share.abandon())
    }
    for (const side of ['left', 'right'] as const) {
      this.#buffers[side].clear()
      this.#byId[side].clear()
    }
    return entries
  }

  #pool(side: Side, value: Settleable): string {
    const name = creditPoolOf(value) ?? side
    let pool = this.#pools.get(name)
    if (pool === undefined) {
      pool = { count: 0, max: this.#config.maxOpenMessages, heap: new MinHeap(expiresFirst) }
      this.#pools.set(name, pool)
      if (Number.isFinite(this.#config.maxOpenMessages)) declareDemand(value, this, this.#config.maxOpenMessages)
    }
    pool.max = Math.min(pool.max, creditLimitOf(value) ?? Number.POSITIVE_INFINITY)
    return name
  }

  /** Buffers an event before any pair is emitted, so no pair settled at once acks a message still waiting for partners. */
  #buffer(side: Side, value: Settleable, id: unknown, key: string, time: number, poolName: string): Buffered {
    const entry: Buffered = {
      side,
      value,
      id,
      key,
      time,
      expireAt: time + this.#config.within + this.#config.grace,
      seq: this.#seq++,
      pool: poolName,
      share: new Share(value),
      unwatch: () => undefined,
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
    this.#byId[side].set(id, entry)
    const pool = this.#pools.get(poolName)
    if (pool !== undefined) {
      pool.count += 1
      pool.heap.push(entry)
    }
    this.#expiring[side].push(entry)
    // A nacked or dead-lettered message leaves every buffer at once: its redelivery must not pair with it.
    entry.unwatch = onFailure(value, () => {
      if (entry.live) this.#drop(entry)
    })
    return entry
  }

  /** Takes an entry out of the buffers without settling it (it failed, or a redelivery superseded it). */
  #drop(entry: Buffered): void {
    this.#remove(entry)
    releaseHold(entry.value, this.#config.scheduler.now())
    quietly(entry.share.abandon())
  }

  #remove(entry: Buffered): void {
    entry.live = false
    entry.unwatch()
    const entries = this.#buffers[entry.side].get(entry.key)
    entries?.delete(entry)
    if (entries?.size === 0) this.#buffers[entry.side].delete(entry.key)
    if (this.#byId[entry.side].get(entry.id) === entry) this.#byId[entry.side].delete(entry.id)
    const pool = this.#pools.get(entry.pool)
    if (pool !== undefined) pool.count -= 1
  }

  /** The live entry that expires first in `heap` (dropping dead heap entries). */
  #first(heap: MinHeap<Buffered>): Buffered | undefined {
    for (;;) {
      const entry = heap.peek()
      if (entry === undefined || entry.live) return entry
      heap.pop()
    }
  }

  /**
   * Stream time of a side for expiring the other side's events: its own, but
   * at least the other side's minus `within + grace` (an event of this side
   * further behind is late anyway), so a side without events (or idle) does
   * not keep the other side's events forever.
   */
  #streamTime(side: Side): number {
    const own = this.#clocks[side].now()
    const partner = this.#clocks[other(side)]
    return partner.ended ? own : Math.max(own, partner.now() - this.#config.within - this.#config.grace)
  }

  /** Expires the events no partner can reach any more: those the other side's stream time has passed by `within + grace`. */
  #expireDue(): void {
    for (;;) {
      if (this.#stopped) return
      let due: Buffered | undefined
      for (const side of ['left', 'right'] as const) {
        const entry = this.#first(this.#expiring[side])
        if (entry === undefined || !(this.#streamTime(other(side)) > entry.expireAt)) continue
        if (due === undefined || expiresFirst(entry, due)) due = entry
      }
      if (due === undefined) return
      this.#expire(due, this.#clocks[other(due.side)].ended)
    }
  }

  #guardCredit(poolName: string): void {
    const pool = this.#pools.get(poolName)
    if (pool === undefined) return
    while (!this.#stopped && pool.count >= pool.max) {
      const entry = this.#first(pool.heap)
      if (entry === undefined) return
      this.#expire(entry, false)
    }
  }

  #expire(entry: Buffered, partial: boolean): void {
    this.#remove(entry)
    releaseHold(entry.value, this.#config.scheduler.now())
    if (entry.matched) {
      quietly(entry.share.ack())
    } else if (this.#config.emitsUnmatched[entry.side]) {
      // The result takes its share before the buffer lets go of its own.
      const result =
        entry.side === 'left'
          ? new Pair(entry.key, entry.value, undefined, entry.time, partial)
          : new Pair(entry.key, undefined, entry.value, entry.time, partial)
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
    let delay: number | undefined
    for (const side of ['left', 'right'] as const) {
      const entry = this.#first(this.#expiring[side])
      if (entry === undefined) continue
      // Expiry needs the other side's stream time strictly past expireAt (or this side's past it by within + grace): wake 1 ms after.
      for (const d of [
        this.#clocks[other(side)].delayUntil(entry.expireAt + 1),
        this.#clocks[side].delayUntil(entry.expireAt + this.#config.within + this.#config.grace + 1),
      ]) {
        if (d !== undefined && (delay === undefined || d < delay)) delay = d
      }
    }
    this.#timer.arm(delay)
  }
}

/** The remembered state of one topic and group, as far as loaded. */
interface JoinScopeState {
  /** Per side, its stream time when a match was last remembered (-Infinity: none). */
  readonly watermark: Record<Side, number>
  /** Set while it is being read. */
  loading: Promise<void> | undefined
}

/** The state field of a join entry: its side and stream id. */
function matchField(side: Side, value: Settleable): string {
  return `${side}\u0000${streamIdOf(value)}`
}

/** True when `value` is a later delivery of the same entry than `than` (a higher delivery count). */
function isNewerDelivery(value: Settleable, than: Settleable): boolean {
  const count = (v: Settleable): number => {
    const c = (v as { readonly deliveryCount?: unknown }).deliveryCount
    return typeof c === 'number' ? c : 0
  }
  return count(value) > count(than)
}

/**
 * Joins the source (left) with `other$` (right), typically two topics or two
 * groups: events whose keys are equal and whose event times are at most
 * `within` ms apart (inclusive) are emitted as a {@link JoinedPair}, each
 * match once, as soon as its second event arrives. Each side keeps its own
 * stream time (the two inputs are read independently, so one may run ahead):
 * an event stays buffered until the other side's stream time passes its time
 * + `within` + `grace`; if it found no partner by then it is emitted with an
 * empty side (`'left'`: left events; `'outer'`: both sides) or settled by
 * `unmatched`. An event behind its own side's stream time by more than
 * `grace`, or behind the other side's by more than `within + grace`, is late
 * (settled by `late`, never joined), so an event emitted as unmatched can no
 * longer find a partner: there are no spurious empty-side results. Settling a
 * pair settles both events; an event in several pairs is acked only once all
 * of them are acked and it has left the buffer. A nacked or dead-lettered
 * event leaves every buffer at once, so its redelivery pairs afresh and never
 * with itself. Both inputs may come from one subscription (`share()` and two
 * `filter`s): the buffers then share its credit, and the oldest event is
 * expired early before they hold all of it. When an input completes, the
 * other side's buffered events expire (`partial: true` when emitted); on a
 * graceful stop (`close()`) buffered messages are given back unsettled and
 * nothing is emitted; on error or unsubscribe nothing is settled.
 *
 * Per-key state lives in one process: with several consumers in a group, an
 * event and its partner may go to different consumers and never meet. Run a
 * join with one consumer per group (or per key range, once topics are
 * partitioned by key).
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
  const grace = options.grace ?? options.within
  const maxOpenMessages = options.maxOpenMessages ?? Number.POSITIVE_INFINITY
  const type: JoinType = options.type ?? 'inner'
  requireNonNegative('within', options.within)
  requireNonNegative('grace', grace)
  requireCount('maxOpenMessages', maxOpenMessages)
  if (options.idleTimeout !== undefined) requirePositive('idleTimeout', options.idleTimeout)
  const leftTimestamp: (value: L) => number = options.leftTimestamp ?? eventTimestamp
  const rightTimestamp: (value: R) => number = options.rightTimestamp ?? eventTimestamp
  const config: JoinConfig = {
    name: options.name ?? `join-${options.within}-${grace}-${type}`,
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
