import type { StreamBackend } from './backend/types.js'
import type { NackOptions, Outcome, Settleable } from './settle.js'

/*
 * Reference-counted settlement of messages that belong to several results
 * (sliding windows, join pairs). Each holder of a message takes a Share; the
 * message is acked when its last share is acked. The first share that fails
 * (nack or deadLetter) settles the message that way at once; the remaining
 * shares then settle only themselves. Counts live in one registry keyed by the
 * stream entry (topic + group + stream id, and the delivery), not by object:
 * two views of one delivery (`decode()` per branch, `withPayload`) are one
 * entry, so two operators fed by the same messages ack each entry only when
 * both are done. A redelivered copy (a higher delivery count) is a new
 * delivery with counts of its own. Values that are not stream entries are
 * counted per object.
 */

interface Holding {
  /** Shares taken and not yet settled. */
  holders: number
  /** A share failed: the target was nacked or dead-lettered, later shares leave it alone. */
  failed: boolean
  /** Open windows and join buffers holding the target (see {@link holdOpen}). */
  pins: number
  /** Called once when a share fails the target (see {@link onFailure}). */
  readonly watchers: Set<() => void>
  /** Where the holding is registered: removed once nothing holds the entry. */
  readonly entry: string | undefined
}

const byObject = new WeakMap<object, Holding>()
const byEntry = new Map<string, Holding>()

/** The identity of one stream entry of one group: `topic`, `group`, `streamId`, or undefined for other values. */
export function entryIdOf(value: unknown): string | undefined {
  if (value === null || typeof value !== 'object') return undefined
  const v = value as { readonly topic?: unknown; readonly group?: unknown; readonly streamId?: unknown }
  if (typeof v.streamId !== 'string' || typeof v.topic !== 'string' || typeof v.group !== 'string') return undefined
  return `${v.topic}\u0000${v.group}\u0000${v.streamId}`
}

/** The delivery of a value: its entry id plus its delivery count (views of one delivery share it). */
function deliveryIdOf(value: object): string | undefined {
  const entry = entryIdOf(value)
  if (entry === undefined) return undefined
  const count = (value as { readonly deliveryCount?: unknown }).deliveryCount
  return `${entry}\u0000${typeof count === 'number' ? count : 0}`
}

function holdingOf(target: object): Holding {
  const delivery = deliveryIdOf(target)
  let holding = delivery === undefined ? byObject.get(target) : byEntry.get(delivery)
  if (holding === undefined) {
    holding = { holders: 0, failed: false, pins: 0, watchers: new Set(), entry: delivery }
    if (delivery === undefined) byObject.set(target, holding)
    else byEntry.set(delivery, holding)
  }
  return holding
}

/** Forgets a stream entry's holding once nothing holds it (a later share starts afresh). */
function forgetIfIdle(holding: Holding): void {
  if (holding.entry !== undefined && holding.holders === 0 && holding.pins === 0 && byEntry.get(holding.entry) === holding) {
    byEntry.delete(holding.entry)
  }
}

/** Marks the holding failed and tells its watchers (once). */
function fail(holding: Holding): void {
  holding.failed = true
  const watchers = [...holding.watchers]
  holding.watchers.clear()
  for (const watcher of watchers) watcher()
}

/**
 * Calls `callback` once, when a share of `target`'s delivery fails it (nack or
 * dead letter through any holder). Join buffers use it to drop a failed message
 * at once, so it never pairs with its own redelivery. Returns the cancel.
 *
 * @param target a message held by an open window or join buffer
 * @param callback what to do when the message fails
 * @returns a function that stops watching
 */
export function onFailure(target: Settleable, callback: () => void): () => void {
  const holding = holdingOf(target)
  if (holding.failed) {
    callback()
    return () => undefined
  }
  holding.watchers.add(callback)
  return () => {
    holding.watchers.delete(callback)
  }
}

function attempt(settle: () => Promise<Outcome>): Promise<Outcome> {
  try {
    return settle()
  } catch (error) {
    return Promise.reject(error instanceof Error ? error : new Error(String(error)))
  }
}

/**
 * One holder's part in the settlement of a value that several results hold.
 * Acking the last outstanding share acks the value; the first share to fail
 * nacks or dead-letters the value at once (first failure wins) and the other
 * shares, settled later, leave it alone. A share settles once: later calls
 * resolve to its first outcome.
 *
 * ## Example
 * ```ts
 * import { Share } from 'rx-redis-streams'
 * const a = new Share(msg)
 * const b = new Share(msg)
 * await a.ack() // msg still pending: b holds it
 * await b.ack() // now msg.ack() runs, once
 * ```
 */
export class Share<T extends Settleable = Settleable> implements Settleable {
  /** The shared value. */
  readonly target: T
  readonly #holding: Holding
  #outcome: Outcome | undefined
  #result: Promise<Outcome> | undefined

  /** @param target the value to take a share of; the share counts as a holder until it is settled */
  constructor(target: T) {
    this.target = target
    this.#holding = holdingOf(target)
    this.#holding.holders += 1
  }

  /** This share's outcome (not necessarily the target's), once settled. */
  get outcome(): Outcome | undefined {
    return this.#outcome
  }

  /** Releases this share; the target is acked when no other share holds it and none failed. */
  ack(): Promise<Outcome> {
    return this.#settle('acked', undefined)
  }

  /** Nacks the target now, unless another share already failed it. */
  nack(error: unknown, options?: NackOptions): Promise<Outcome> {
    return this.#settle('nacked', () => this.target.nack(error, options))
  }

  /** Dead-letters the target now, unless another share already failed it. */
  deadLetter(reason: unknown): Promise<Outcome> {
    return this.#settle('dead-lettered', () => this.target.deadLetter(reason))
  }

  #settle(outcome: Outcome, failWith: (() => Promise<Outcome>) | undefined): Promise<Outcome> {
    if (this.#result !== undefined) return this.#result
    this.#outcome = outcome
    const holding = this.#holding
    holding.holders -= 1
    let settling: Promise<Outcome> | undefined
    if (failWith !== undefined) {
      if (!holding.failed) {
        fail(holding)
        settling = attempt(failWith)
      }
    } else if (holding.holders === 0 && !holding.failed) {
      settling = attempt(() => this.target.ack())
    }
    forgetIfIdle(holding)
    this.#result = settling === undefined ? Promise.resolve(outcome) : settling.then(() => outcome)
    return this.#result
  }

  /**
   * Lets go of this share without settling anything: for a holder whose copy
   * was superseded by a redelivery of the same entry (the old delivery is
   * the engine's to withdraw). Resolves to `'withdrawn'`.
   */
  abandon(): Promise<Outcome> {
    if (this.#result !== undefined) return this.#result
    this.#outcome = 'withdrawn'
    this.#holding.holders -= 1
    forgetIfIdle(this.#holding)
    this.#result = Promise.resolve('withdrawn')
    return this.#result
  }
}

/**
 * A result made of several values (a window, a joined pair), each held
 * through its own {@link Share}. Settling it settles every share: acking
 * releases them (each value is acked once its last holder is acked); a nack
 * or dead letter fails every value that no other holder failed first. The
 * first call wins; later calls resolve to the first outcome and do nothing.
 *
 * ## Example
 * ```ts
 * import { CompositeSettleable, Share } from 'rx-redis-streams'
 * class Batch<T extends Settleable> extends CompositeSettleable {
 *   constructor(readonly items: readonly T[]) { super(items.map((i) => new Share(i))) }
 * }
 * ```
 */
export class CompositeSettleable implements Settleable {
  readonly #shares: readonly Share[]
  #outcome: Outcome | undefined
  #result: Promise<Outcome> | undefined

  /** @param shares one share per constituent, taken when the result is formed */
  constructor(shares: readonly Share[]) {
    this.#shares = shares
  }

  /** The outcome of this result, once settled. */
  get outcome(): Outcome | undefined {
    return this.#outcome
  }

  /** The values this result holds shares of. */
  get constituents(): readonly Settleable[] {
    return this.#shares.map((share) => share.target)
  }

  /** Acks every constituent whose last holder this is. */
  ack(): Promise<Outcome> {
    return this.#settle('acked', (share) => share.ack())
  }

  /** Nacks every constituent (first failure wins for constituents shared with other results). */
  nack(error: unknown, options?: NackOptions): Promise<Outcome> {
    return this.#settle('nacked', (share) => share.nack(error, options))
  }

  /** Dead-letters every constituent (first failure wins for constituents shared with other results). */
  deadLetter(reason: unknown): Promise<Outcome> {
    return this.#settle('dead-lettered', (share) => share.deadLetter(reason))
  }

  #settle(outcome: Outcome, settle: (share: Share) => Promise<Outcome>): Promise<Outcome> {
    if (this.#result !== undefined) return this.#result
    this.#outcome = outcome
    this.#result = Promise.all(this.#shares.map(settle)).then(() => outcome)
    return this.#result
  }
}

interface Holdable {
  holdUntil(untilMs: number): void
}

function isHoldable(value: object): value is Holdable {
  return typeof (value as Partial<Holdable>).holdUntil === 'function'
}

/**
 * Marks a value as held by an open window or join buffer: while any such
 * holder remains, the value is not failed by `consumerTimeout`
 * (`holdUntil(Infinity)`; the lease keeps being renewed). A composite value
 * holds each of its constituents.
 *
 * @param target the value entering an open window or join buffer
 */
export function holdOpen(target: Settleable): void {
  if (target instanceof CompositeSettleable) {
    for (const constituent of target.constituents) holdOpen(constituent)
    return
  }
  const holding = holdingOf(target)
  holding.pins += 1
  if (holding.pins === 1 && isHoldable(target)) target.holdUntil(Number.POSITIVE_INFINITY)
}

/**
 * Undoes one {@link holdOpen}. When the last open holder lets go, the value's
 * consumer timeout counts again from `nowMs` (`holdUntil(nowMs)`): whoever
 * received the result that holds it must settle it within `consumerTimeout`.
 *
 * @param target the value leaving an open window or join buffer
 * @param nowMs the current time, epoch ms
 */
export function releaseHold(target: Settleable, nowMs: number): void {
  if (target instanceof CompositeSettleable) {
    for (const constituent of target.constituents) releaseHold(constituent, nowMs)
    return
  }
  const holding = holdingOf(target)
  if (holding.pins === 0) {
    forgetIfIdle(holding)
    return
  }
  holding.pins -= 1
  if (holding.pins === 0 && isHoldable(target)) target.holdUntil(nowMs)
  forgetIfIdle(holding)
}

/**
 * A property a subscription may put on the messages it delivers: its credit
 * (`maxPendingMessages`). Window operators and `joinWithin` bound what they
 * hold by it even without a `maxOpenMessages` option, so that a full credit
 * never deadlocks them. A view of a message (`withPayload`) should forward it.
 */
export const creditLimit: unique symbol = Symbol.for('rx-redis-streams.creditLimit')

/** The {@link creditLimit} of a value, when it carries a positive one. */
export function creditLimitOf(value: unknown): number | undefined {
  if (value === null || typeof value !== 'object') return undefined
  const limit = (value as { [creditLimit]?: unknown })[creditLimit]
  return typeof limit === 'number' && limit >= 1 ? limit : undefined
}

/**
 * A property a subscription may put on the messages it delivers: a function
 * that tells whether the subscription is genuinely idle right now, i.e. has
 * nothing left to deliver: its last read came back empty, no delivery is
 * waiting, and its credit is not exhausted. Window operators and `joinWithin`
 * let stream time follow the clock (`idleTimeout`) only while it returns
 * true, so a pause caused by backpressure (a full credit behind a slow sink,
 * a slow read) never makes in-order events late. A view of a message should
 * forward it. Values without it count as idle once no event came for
 * `idleTimeout`.
 */
export const sourceIdle: unique symbol = Symbol.for('rx-redis-streams.sourceIdle')

/** The {@link sourceIdle} probe of a value, when it carries one. */
export function sourceIdleOf(value: unknown): (() => boolean) | undefined {
  if (value === null || typeof value !== 'object') return undefined
  const probe = (value as { [sourceIdle]?: unknown })[sourceIdle]
  return typeof probe === 'function' ? (probe as () => boolean).bind(value) : undefined
}

/**
 * A property a subscription may put on the messages it delivers: true on a
 * first delivery, an entry read as new (XREADGROUP `>`), which no consumer of
 * the group was given before (not a claim, a re-read of pending entries or a
 * redelivery). Window operators take such a message for new, never for the
 * replay of a window emitted before, however far behind the remembered
 * watermark its time is. A view of a message should forward it.
 */
export const firstDelivery: unique symbol = Symbol.for('rx-redis-streams.firstDelivery')

/** True when a value carries {@link firstDelivery} set to true. */
export function isFirstDelivery(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false
  return (value as { [firstDelivery]?: unknown })[firstDelivery] === true
}

/** The store verbs window and join operators keep their state with (see {@link operatorStateStore}). */
export type OperatorStateBackend = Required<Pick<StreamBackend, 'operatorStateRead' | 'operatorStateWrite'>>

/**
 * A property a subscription may put on the messages it delivers: the store
 * (its backend) where window and join operators keep, per group and operator
 * name, what a Kafka Streams state store would remember across restarts
 * (which windows were emitted and settled, the closed-window watermark,
 * which join entries matched). A view of a message should forward it. Without
 * it, that state lives in memory only.
 */
export const operatorStateStore: unique symbol = Symbol.for('rx-redis-streams.operatorStateStore')

/** The {@link operatorStateStore} of a value, when it carries one that supports operator state. */
export function operatorStateOf(value: unknown): OperatorStateBackend | undefined {
  if (value === null || typeof value !== 'object') return undefined
  const store = (value as { [operatorStateStore]?: unknown })[operatorStateStore]
  if (store === null || typeof store !== 'object') return undefined
  const s = store as Partial<OperatorStateBackend>
  return typeof s.operatorStateRead === 'function' && typeof s.operatorStateWrite === 'function' ? (s as OperatorStateBackend) : undefined
}
