import type { NackOptions, Outcome, Settleable } from './settle.js'

/*
 * Reference-counted settlement of messages that belong to several results
 * (sliding windows, join pairs). Each holder of a message takes a Share; the
 * message is acked when its last share is acked. The first share that fails
 * (nack or deadLetter) settles the message that way at once; the remaining
 * shares then settle only themselves. Counts live in one registry keyed by the
 * message object, so they add up across operators (two window operators fed
 * by the same messages ack each message only when both are done).
 */

interface Holding {
  /** Shares taken and not yet settled. */
  holders: number
  /** A share failed: the target was nacked or dead-lettered, later shares leave it alone. */
  failed: boolean
  /** Open windows and join buffers holding the target (see {@link holdOpen}). */
  pins: number
}

const holdings = new WeakMap<object, Holding>()

function holdingOf(target: object): Holding {
  let holding = holdings.get(target)
  if (holding === undefined) {
    holding = { holders: 0, failed: false, pins: 0 }
    holdings.set(target, holding)
  }
  return holding
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

  #settle(outcome: Outcome, fail: (() => Promise<Outcome>) | undefined): Promise<Outcome> {
    if (this.#result !== undefined) return this.#result
    this.#outcome = outcome
    const holding = this.#holding
    holding.holders -= 1
    let settling: Promise<Outcome> | undefined
    if (fail !== undefined) {
      if (!holding.failed) {
        holding.failed = true
        settling = attempt(fail)
      }
    } else if (holding.holders === 0 && !holding.failed) {
      settling = attempt(() => this.target.ack())
    }
    this.#result = settling === undefined ? Promise.resolve(outcome) : settling.then(() => outcome)
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
  if (holding.pins === 0) return
  holding.pins -= 1
  if (holding.pins === 0 && isHoldable(target)) target.holdUntil(nowMs)
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
