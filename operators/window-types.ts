import type { SchedulerLike } from 'rxjs'
import { EventSystemError } from '../src/errors.js'
import type { Settleable } from '../src/settle.js'

/*
 * Types shared by the event-time window operators (`windowTumbling`,
 * `windowSliding`, `windowSession`), `joinWithin` and `reduceWindow`.
 */

/** A value with an event time: a `Message` (the default `timestamp` reads `event.timestamp`). */
export type Timestamped = Settleable & { readonly event: { readonly timestamp: number } }

/**
 * What happens to a late event, one whose windows have all closed:
 * `'deadLetter'` (default) moves it to the dead letter queue with a
 * {@link LateEventError}; `'ack'` drops it; `'emit'` emits it as a {@link Late}
 * value next to the windows, to be settled downstream.
 */
export type LatePolicy = 'deadLetter' | 'ack' | 'emit'

/**
 * Options shared by the window operators.
 *
 * Stream time is the largest event time the operator has seen (one clock per
 * operator, across keys); a window `[start, end)` closes when stream time
 * reaches `end + grace`.
 *
 * Memory and credit: a message in an open window is unsettled, so it keeps
 * one unit of its subscription's credit (`maxPendingMessages`). What the open
 * windows of a subscription hold is therefore bounded by that credit, and a
 * crash replays all of it. When open windows hold the whole credit, no new
 * message arrives, stream time stops and the windows would wait forever:
 * `maxOpenMessages` prevents that by emitting the window closing first early.
 * Messages that carry their subscription's credit (`creditLimit`) lower
 * `maxOpenMessages` to it on their own. Give each operator its share when
 * several hold messages of one subscription.
 */
export interface WindowOptions<T, L extends LatePolicy = 'deadLetter'> {
  /**
   * The operator's name in the state it keeps in the store per group
   * (Redis: `event:opstate:{topic}:<group>:<name>:…`): which windows were
   * emitted and settled, and the closed-window watermark, so that after a
   * restart a replayed message whose windows were all settled is acked, one
   * whose windows closed without it goes to the `late` policy, and a window
   * emitted but not settled is collected again whole. Default: derived from
   * the kind, size and grace (`tumbling-60000-5000`); set it when one group
   * runs two such operators.
   */
  readonly name?: string
  /**
   * Groups messages into separate windows per key. Default: one key, `''`, for all.
   * The windows of a key live in the process that reads its messages: per-key
   * windows need one consumer per key (run the group with one consumer), else
   * a key's events are split between consumers and each emits part of its
   * window; the operator emits a process warning (`RX_REDIS_STREAMS_SPLIT_WINDOW`)
   * when it sees that happen.
   */
  readonly key?: (value: T) => string
  /** Event time of a value, in ms. Default: `value.event.timestamp`. A non-finite time dead-letters the value. */
  readonly timestamp?: (value: T) => number
  /** Allowed lateness in ms: a window `[start, end)` closes when stream time reaches `end + grace`. Default 0. */
  readonly grace?: number
  /**
   * A window holding this many messages is emitted at once, flagged `early`;
   * later messages of the same bounds start a new window. The open windows
   * of its key that start before it are emitted first (early too), so the
   * results of a key come out in window order. Default: no limit.
   */
  readonly maxMessages?: number
  /**
   * Most messages all open windows may hold together. On reaching it, the open
   * window that would close first is emitted early (flagged `early`), and so on
   * until fewer are held, so a full credit never deadlocks a window. Set it to
   * the subscription's `maxPendingMessages` or lower. Default: the credit
   * limit carried by the messages (`creditLimit`), else no limit.
   */
  readonly maxOpenMessages?: number
  /**
   * Idle advancement, in ms of scheduler time: when stream time has not moved
   * for this long, it follows the clock (grows by the time elapsed since it
   * last moved), so the last windows close without waiting for a future
   * event. Only while the source is genuinely idle: messages of a
   * subscription tell whether it has nothing left to deliver (its last read
   * came back empty, no read in flight, credit not exhausted), so a pause
   * caused by backpressure never makes in-order events late. Default: stream
   * time moves only with events.
   */
  readonly idleTimeout?: number
  /** What to do with late events (see {@link LatePolicy}). Default `'deadLetter'`. */
  readonly late?: L
  /** Scheduler for idle advancement and for `now()` (tests pass a `TestScheduler`). Default `asyncScheduler`. */
  readonly scheduler?: SchedulerLike
}

/**
 * A window of messages, emitted when stream time passes its `end + grace` (or
 * early, see `early`). Settling it settles every message in it; a message
 * that other windows or join results also hold is acked only when all of them
 * are acked (a failure of any one fails it at once).
 */
export interface Window<T> extends Settleable {
  readonly kind: 'window'
  /** The key of the window (`''` without a `key` option). */
  readonly key: string
  /** Start of the window, event time in ms, inclusive. For a session: its first event time. */
  readonly start: number
  /** End of the window, event time in ms, exclusive. For a session: its last event time plus the gap. */
  readonly end: number
  /** The messages, in arrival order. */
  readonly messages: readonly T[]
  /**
   * True when emitted before stream time reached `end + grace`: on `maxMessages`
   * or `maxOpenMessages` (or because a later window of its key was). Later
   * messages with the same bounds form another window.
   */
  readonly early: boolean
  /**
   * True when emitted because the source completed (not on a graceful stop,
   * which gives held messages back unemitted) before stream time reached
   * `end + grace`: more messages might have belonged to it.
   */
  readonly partial: boolean
}

/** A late event under `late: 'emit'`; settling it settles the message. */
export interface Late<T> extends Settleable {
  readonly kind: 'late'
  /** The key of the message. */
  readonly key: string
  /** The event time of the message. */
  readonly timestamp: number
  /** Stream time when it arrived. */
  readonly streamTime: number
  readonly message: T
}

/** What a window operator emits: windows, and late events too under `late: 'emit'`. */
export type WindowOutput<T, L extends LatePolicy> = L extends 'emit' ? Window<T> | Late<T> : Window<T>

/** True for a {@link Window} (to split the output of `late: 'emit'`). */
export function isWindow<T>(value: Window<T> | Late<T>): value is Window<T> {
  return value.kind === 'window'
}

/** True for a {@link Late} event (to split the output of `late: 'emit'`). */
export function isLate<T>(value: Window<T> | Late<T>): value is Late<T> {
  return value.kind === 'late'
}

/** The aggregate of one window, made by `reduceWindow`; settling it settles the window. */
export interface WindowResult<R, T> extends Settleable {
  readonly kind: 'windowResult'
  readonly key: string
  readonly start: number
  readonly end: number
  readonly early: boolean
  /** True when the window was flushed because its source completed (see {@link Window.partial}). */
  readonly partial: boolean
  /** The reduced value. */
  readonly value: R
  /** The window it was computed from. */
  readonly window: Window<T>
}

/** `'inner'`: pairs only; `'left'`: pairs and unmatched left events; `'outer'`: pairs and unmatched events of both sides. */
export type JoinType = 'inner' | 'left' | 'outer'

/**
 * A result of `joinWithin`: two events with the same key within `within` ms of
 * each other, or one unmatched event with an empty side. Settling it settles
 * both (a message in several pairs is acked only when all of them are acked).
 */
export interface JoinedPair<L, R> extends Settleable {
  readonly kind: 'joined'
  readonly key: string
  readonly left: L
  readonly right: R
  /** Event time of the result: the later of the two event times (the one present, when a side is empty). */
  readonly timestamp: number
  /**
   * True for an unmatched result emitted because the partner side's source
   * completed (not on a graceful stop, which gives buffered messages back
   * unemitted): a partner might still have come.
   */
  readonly partial: boolean
}

/** What `joinWithin` emits for a join type. */
export type JoinResult<L, R, J extends JoinType> = J extends 'inner'
  ? JoinedPair<L, R>
  : J extends 'left'
    ? JoinedPair<L, R> | JoinedPair<L, undefined>
    : JoinedPair<L, R> | JoinedPair<L, undefined> | JoinedPair<undefined, R>

/** The dead-letter reason of a late event (`late: 'deadLetter'`). */
export class LateEventError extends EventSystemError {
  constructor(
    readonly key: string,
    readonly timestamp: number,
    readonly streamTime: number,
  ) {
    super('LATE_EVENT', `late event: time ${timestamp} of key ${JSON.stringify(key)} is behind closed windows (stream time ${streamTime})`)
  }
}

/** The dead-letter reason of an event that found no join partner (`unmatched: 'deadLetter'`). */
export class UnmatchedJoinError extends EventSystemError {
  constructor(
    readonly key: string,
    readonly timestamp: number,
    readonly within: number,
  ) {
    super('JOIN_UNMATCHED', `no join partner for key ${JSON.stringify(key)} within ${within} ms of time ${timestamp}`)
  }
}
