import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import type { Subscriber } from 'rxjs'
import type { DeadLetterInput, GiveBackItem, GroupReader, ReadEntry, StreamBackend } from '../backend/types.js'
import type { Config } from '../config/types.js'
import { emitInContext } from '../context.js'
import { ClosedError, DecodeError, GroupMissingError, MalformedPayloadError } from '../errors.js'
import { decodeEntry, type Event, type StoredEvent } from '../event.js'
import type { Logger } from '../logger.js'
import { reasonText, type NackOptions, type Outcome } from '../settle.js'
import { messagingAttributes, type Instruments } from '../telemetry/instruments.js'
import { messageLogFields, type MessageLogFields } from '../telemetry/logging.js'
import type { AckBatcher } from './acker.js'
import { CreditLedger } from './credit.js'
import type { Phase } from './lifecycle.js'
import { DeliveredMessage, type Message, type MessageHost, type RetryDefaults } from './message.js'
import { resolveOptions, type ConsumeOptions, type ResolvedOptions } from './options.js'
import { setLongTimeout, type LongTimer } from './timers.js'

export { validateConsumeOptions, CONSUMER_READER_CLIENT_SETTINGS, type ConsumeOptions } from './options.js'

/**
 * What a subscription is doing, for health checks:
 * `starting` (creating its group, re-reading its own pending entries), `pulling` (a read of
 * new entries succeeded recently), `paused` (out of credit: the pipeline holds every message
 * it may), `reconnecting` (reads fail; retried with backoff), `stalled` (a read has not
 * returned for far longer than `blockMs`), `errored` (ended by a permanent failure or an
 * error in the pipeline: see `error`), `stopping`, `stopped`.
 */
export type SubscriptionState = 'starting' | 'pulling' | 'paused' | 'reconnecting' | 'stalled' | 'errored' | 'stopping' | 'stopped'

/** What every subscription of one event manager shares. */
export interface EngineContext {
  readonly backend: StreamBackend
  readonly config: Config
  readonly logger: Logger
  readonly acker: AckBatcher
  readonly instruments: Instruments
  /** Starts the delayed-event promoter of a topic (reference counted); returns its release. */
  readonly acquirePromoter: (topic: string) => () => void
  readonly onClosed: (subscription: Subscription) => void
}

/** A snapshot of one subscription for `health()`. */
export interface SubscriptionStatus {
  readonly topic: string
  readonly group: string
  readonly consumer: string
  readonly state: SubscriptionState
  readonly held: number
  /** The current credit (maxPendingMessages, or what the operators declared plus read-ahead). */
  readonly credit?: number
  readonly lastReadAt: number | null
  readonly claimerAlive: boolean
  /** Why an `errored` subscription ended. */
  readonly error?: string
}

let consumerSequence = 0
/** A consumer name unique to this process: host-pid-random. */
export function defaultConsumerName(): string {
  return `${hostname().replace(/[^A-Za-z0-9._:-]/g, '_')}-${String(process.pid)}-${(consumerSequence++).toString(36)}${randomBytes(3).toString('hex')}`
}

/**
 * A recovered message (re-read from the consumer's own pending list, or
 * claimed with a delivery count of 2 or more) is on probation until it is
 * settled, parked by a window or join (`holdUntil(Infinity)`), or has been held
 * this long without crashing the process.
 */
const PROBATION_MS = 1_000
/** A read that has not returned this long after its block time is `stalled`. */
const STALL_GRACE_MS = 5_000
/** Credit for read-ahead when the credit follows demand and nothing downstream declares one: this many reads of `batchSize`. */
const READ_AHEAD_BATCHES = 4
/** The most reads of new entries one read-ahead round runs. */
const READ_AHEAD_READS = 4
/**
 * A read of a read-ahead round asks for max(batchSize, this) entries (`batchSize` is the size of a blocking read):
 * a small batch size does not cap a backlog's drain at a few entries per round trip.
 */
const READ_AHEAD_MIN_READ = 50
/**
 * Rounds of read-ahead the credit has room for when it follows a declared demand: the round being delivered and
 * the next one, sent before it is delivered (see #sendPrefetch).
 */
const READ_AHEAD_ROUNDS = 2
/** Dropped copies left in a subscription's held map before it is compacted (when they also outnumber the held ones). */
const COMPACT_AFTER = 1_024
/** The most bytes of an error's stack kept in a dead letter. */
const MAX_STACK = 4_096

/** Errors no retry fixes: the subscription errors. */
const PERMANENT = /^(NOPERM|WRONGPASS|NOAUTH|WRONGTYPE)\b/

function isPermanentFailure(error: unknown): boolean {
  if (error instanceof ClosedError) return true
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 3; e = e.cause, depth++) {
    if (PERMANENT.test(e.message)) return true
  }
  return false
}

/** Why a subscription stops; `close`, `signal` complete its Observable, `error` errors it. */
export type StopReason = 'unsubscribe' | 'close' | 'signal' | 'error' | 'takeover'

/** Stream ids compare by their two numbers. */
function compareStreamIds(a: string, b: string): number {
  const ia = a.indexOf('-')
  const ib = b.indexOf('-')
  const ma = Number(ia < 0 ? a : a.slice(0, ia))
  const mb = Number(ib < 0 ? b : b.slice(0, ib))
  if (ma !== mb) return ma < mb ? -1 : 1
  const sa = ia < 0 ? 0 : Number(a.slice(ia + 1))
  const sb = ib < 0 ? 0 : Number(b.slice(ib + 1))
  return sa === sb ? 0 : sa < sb ? -1 : 1
}

/** A function, not a field read, so that checks after an await or a call are not narrowed away. */
const isHeld = (message: DeliveredMessage): boolean => message.held

/** A read-ahead round in flight that the pull loop has not taken yet. */
interface Prefetch {
  readonly reply: Promise<ReadEntry[][]>
  /** The units reserved for it (the sum of its counts). */
  readonly count: number
  readonly sentAt: number
}

/** The `replay_group` field of raw entry fields, read before anything else is decoded. */
function replayGroupOf(fields: readonly string[]): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'replay_group') return fields[i + 1]
  return undefined
}

/**
 * How many times each entry was given back unstarted by a subscription of
 * this process (per backend), for the `never_started` rule. Entries given back
 * to consumers in other processes are not seen here (documented).
 */
const giveBacks = new WeakMap<StreamBackend, Map<string, number>>()
const MAX_TRACKED_GIVE_BACKS = 100_000

const sleep = (ms: number, signal: { wake?: () => void }): Promise<void> =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal.wake = () => {
      clearTimeout(timer)
      resolve()
    }
  })

/** The error, or the first of its causes, of kind 'connection' (a ConnectionError): Redis cannot be reached. */
function connectionFailureIn(error: unknown): unknown {
  for (let e = error, depth = 0; typeof e === 'object' && e !== null && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    if ((e as { kind?: unknown }).kind === 'connection') return e
  }
  return undefined
}

/**
 * One consumer of a group: the credit-based pull loop and the timers (consumer
 * timeout, leases, claiming) of one subscription to a topic Observable.
 *
 * Each message's life is the state machine of `lifecycle.ts`; the credit is
 * one {@link CreditLedger} whose every release wakes the pull loop (and a claim
 * scan waiting for credit).
 */
export class Subscription implements MessageHost {
  readonly topic: string
  readonly group: string
  readonly consumer: string
  readonly #ctx: EngineContext
  readonly #subscriber: Subscriber<Message>
  readonly #reader: GroupReader
  readonly #o: ResolvedOptions
  readonly #signalOptions: Pick<ConsumeOptions, 'signal' | 'until'>
  /**
   * Every message holding credit, by stream id (one copy per entry): those of its values whose `held` is true. A
   * dropped copy is only flagged (`held` false) and stays until the map is compacted (see #drop): no Map delete per
   * message (V8 shrinks and regrows a Map's table as a batch is settled and the next one read).
   */
  #held = new Map<string, DeliveredMessage>()
  /** How many values of #held are held; and how many are dropped copies not yet compacted away. */
  #heldCount = 0
  #heldStale = 0
  /**
   * Copies no longer held whose timed-out attempt has not returned (e.g. dead-lettered at its last timeout while the
   * handler ignores its signal). A new delivery of the same id (the group destroyed and re-created, XGROUP SETID) is
   * not emitted until that run returned: never two runs of one entry in one consumer.
   */
  readonly #openRuns = new Map<string, DeliveredMessage>()
  /**
   * Ids acked here whose XACK has not returned yet: a claim scan that finds one (idle, not yet acked) skips it.
   * One list per XACK batch, dropped when its batch's promise settles (no Set entry added and deleted per message).
   */
  readonly #acking = new Set<string[]>()
  /** The list of the XACK batch the last ack joined, and that batch's promise. */
  #ackingList: string[] | undefined
  #ackingOn: Promise<'acked' | 'failed'> | undefined
  /** Every id of #acking, built on the first lookup (claims, re-reads: rare), kept up to date until a list drops. */
  #ackingIndex: Set<string> | undefined
  /** Ids whose ack or dead-letter move failed here ('failed'): still pending here, maybe settled again by the handler; a re-read skips them (a claim recovers them once idle). */
  readonly #storeFailed = new Set<string>()
  readonly #ledger: CreditLedger
  readonly #demands = new Map<object, number>()
  readonly #maxDeliveries: number
  readonly #retry: RetryDefaults
  readonly #logger: Logger
  readonly #attributes
  readonly #giveBacks: Map<string, number>
  readonly #intervals = new Set<NodeJS.Timeout>()
  readonly #timers = new Set<LongTimer>()
  readonly #sleeper: { wake?: () => void } = {}
  #aborted = false
  #state: SubscriptionState = 'starting'
  #error: unknown
  #lastReadAt: number | null = null
  #readStartedAt = 0
  #lastReadEmpty = false
  #creditWaiter: (() => void) | undefined
  #readPending = true
  #pendingCursor = '0'
  /** The last id a new-entry read (`>`) delivered. */
  #lastNewId: string | undefined
  /** The last read of new entries came back full (a backlog likely waits): the next round reads ahead. */
  #readAhead = false
  /**
   * A read-ahead round sent before the round it follows was delivered (at most one; see #sendPrefetch): its credit
   * is reserved, and the pull loop's next read is this one.
   */
  #prefetch: Prefetch | undefined
  /** Slow start of recovery (see PROBATION_MS): at most this many recovered messages on probation at once. */
  #recoveryWindow = 1
  readonly #probation = new Map<DeliveredMessage, NodeJS.Timeout>()
  #claimCursor = '0-0'
  /** A claim scan is unfinished (out of credit): the next release goes on with it, before the pull loop reads new entries. */
  #claimWanted = false
  #claiming = false
  /** Settles when the claim scan under way ends. */
  #claimRunning: Promise<void> | undefined
  #lostUnlogged = 0
  #claimerAlive = false
  #warnedNeverStarted = false
  /** Emission order, and the latest emitted message that was started: an older unstarted one was skipped (dropped). */
  #seq = 0
  #maxStartedSeq = 0
  /** When any message was last started. */
  #lastBeginAt = 0
  /** Give-backs waiting to be sent (one call per tick), and the calls in flight. */
  #giveBackQueue: GiveBackItem[] = []
  readonly #giveBackCalls = new Set<Promise<void>>()
  /** A MalformedPayloadError thrown this turn by a payload getter: an unsubscribe now is that error. */
  #thrown: MalformedPayloadError | undefined
  #stopReason: StopReason | undefined
  #stopping: Promise<void> | undefined
  #finished: Promise<void> | undefined
  #finish: (() => void) | undefined
  /** Resolves the wait of a lingering subscription once nothing is held. */
  #emptied: (() => void) | undefined
  #releasePromoter: (() => void) | undefined
  #predecessor: Promise<void> | undefined

  constructor(ctx: EngineContext, topic: string, options: ConsumeOptions & { readonly consumer: string }, subscriber: Subscriber<Message>) {
    const c = ctx.config
    this.#ctx = ctx
    this.topic = topic
    this.group = options.group
    this.consumer = options.consumer
    this.#subscriber = subscriber
    this.#o = resolveOptions(options, c)
    this.#signalOptions = { ...(options.signal === undefined ? {} : { signal: options.signal }), ...(options.until === undefined ? {} : { until: options.until }) }
    this.#ledger = new CreditLedger(this.#limit(), () => this.#wake())
    this.#maxDeliveries = c.maxRetries + 1
    this.#retry = { maxRetries: c.maxRetries, initialDelay: c.retryBackoffMs }
    this.#logger = ctx.logger.child({ topic, group: this.group, consumer: this.consumer })
    this.#attributes = messagingAttributes(topic, this.group)
    this.#reader = ctx.backend.createReader()
    let tracked = giveBacks.get(ctx.backend)
    if (tracked === undefined) {
      tracked = new Map()
      giveBacks.set(ctx.backend, tracked)
    }
    this.#giveBacks = tracked
  }

  /** Starts pulling (after `predecessor`, a stopping subscription with this consumer name, has finished). */
  start(predecessor?: Promise<void>): void {
    this.#predecessor = predecessor
    this.#releasePromoter = this.#ctx.acquirePromoter(this.topic)
    const timeout = this.#o.consumerTimeoutMs
    // Runs while draining and lingering too: unstarted messages are given back when their time is up.
    this.#every(Math.max(20, Math.min(1_000, Math.floor(timeout / 10))), () => this.#expireTimedOut(), true)
    const leaseEvery = Math.max(50, Math.floor(this.#o.claimMinIdleMs / 3))
    // A message is renewed once older than this: it idles at most leaseEvery + renewAfter (+ the call's latency),
    // two thirds of claimMinIdleTime, or leaseEvery where the 50 ms floor applies (seed 500101 was claimed away
    // at exactly claimMinIdleTime 100 ms while queued here).
    const renewAfter = Math.max(0, Math.min(leaseEvery, this.#o.claimMinIdleMs - 2 * leaseEvery))
    // Leases are renewed while draining and lingering: a message still held must not be claimed.
    this.#every(leaseEvery, () => this.#renewLeases(renewAfter), true)
    if (this.#o.claimIntervalMs > 0) {
      this.#claimerAlive = true
      this.#every(this.#o.claimIntervalMs, () => this.#claimTick())
    }
    // Dead letters older than dlqTtl are trimmed on every move and here, periodically (one XTRIM MINID).
    const dlqTtl = this.#ctx.config.dlqTtlMs
    this.#every(Math.min(60_000, Math.max(100, Math.floor(dlqTtl / 10))), () => this.#trimDeadLetters())
    const { signal, until } = this.#signalOptions
    if (signal !== undefined) {
      if (signal.aborted) queueMicrotask(() => void this.stop('signal'))
      else signal.addEventListener('abort', () => void this.stop('signal'), { once: true })
    }
    if (until !== undefined) {
      until.then(
        () => void this.stop('signal'),
        () => void this.stop('signal'),
      )
    }
    void this.#run()
  }

  get status(): SubscriptionStatus {
    const status: { -readonly [K in keyof SubscriptionStatus]: SubscriptionStatus[K] } = {
      topic: this.topic,
      group: this.group,
      consumer: this.consumer,
      state: this.#stateNow(),
      held: this.#heldCount,
      credit: this.#ledger.limit,
      lastReadAt: this.#lastReadAt,
      claimerAlive: this.#claimerAlive,
    }
    if (this.#state === 'errored') status.error = reasonText(this.#error)
    return status
  }

  #stateNow(): SubscriptionState {
    const s = this.#state
    // A read that hangs (no reply, no error) far past its block time.
    if ((s === 'pulling' || s === 'starting') && this.#readStartedAt > 0 && Date.now() - this.#readStartedAt > this.#o.blockMs + STALL_GRACE_MS) return 'stalled'
    return s
  }

  /** @internal The store it reads from (messages carry it for window and join state). */
  get backend(): StreamBackend {
    return this.#ctx.backend
  }

  /** True once this subscription stopped pulling (it may still be draining or holding emitted messages). */
  get stopping(): boolean {
    return this.#aborted
  }

  /**
   * @internal No attempt starts once it stops, except on a message emitted before
   * the downstream unsubscribed and never started (e.g. taken with
   * `firstValueFrom`): it keeps its lease and may still be handled.
   */
  mayBegin(phase: Phase): boolean {
    if (!this.#aborted) return true
    return phase === 'queued' && this.#stopReason === 'unsubscribe' && this.#state !== 'errored'
  }

  /** True while it pulls: a second subscription with its consumer name is refused. */
  get live(): boolean {
    return !this.#aborted
  }

  /** True once it ended by an error (kept for `health()`). */
  get errored(): boolean {
    return this.#state === 'errored'
  }

  #every(ms: number, task: () => Promise<void> | void, whileStopping = false): void {
    let running = false
    const timer = setInterval(() => {
      if (running || (!whileStopping && this.#aborted)) return
      running = true
      Promise.resolve()
        .then(task)
        .catch((error: unknown) => this.#logger.warn({ err: error }, 'background task failed'))
        .finally(() => (running = false))
    }, ms)
    timer.unref()
    if (!whileStopping) (timer as NodeJS.Timeout & { pulls?: boolean }).pulls = true
    this.#intervals.add(timer)
  }

  /** A method, not a field read, so that checks after an await are not narrowed away. */
  #isAborted(): boolean {
    return this.#aborted
  }

  // ---- credit ----

  /**
   * The credit limit: the user's, or the declared demand plus read-ahead. With a declared demand (handleEach, a
   * window, a join: operators that start or park what they hold, so a long queue of theirs keeps its lease), two
   * rounds of READ_AHEAD_READS reads of max(batchSize, READ_AHEAD_MIN_READ) = 8 × max(batchSize, 50); with none (a
   * hand-written mergeMap may never call begin(), and then what waits past consumerTimeout is given back),
   * 4 × batchSize.
   */
  #limit(): number {
    if (this.#o.maxPending !== undefined) return this.#o.maxPending
    if (this.#demands.size === 0) return READ_AHEAD_BATCHES * this.#o.batchSize
    let sum = 0
    for (const n of this.#demands.values()) sum += n
    return sum + READ_AHEAD_ROUNDS * READ_AHEAD_READS * this.#readAheadRead()
  }

  /** The count of one read of a read-ahead round (before the credit left bounds it). */
  #readAheadRead(): number {
    return Math.max(this.#o.batchSize, READ_AHEAD_MIN_READ)
  }

  get creditLimit(): number {
    return this.#ledger.limit
  }

  declareDemand(holder: object, n: number): void {
    if (!Number.isFinite(n) || n < 0) return
    if (this.#demands.get(holder) === n) return
    this.#demands.set(holder, Math.floor(n))
    this.#ledger.setLimit(this.#limit())
  }

  /** Credit or recovery room came free: the one wake-up path. */
  #wake(): void {
    // A claim scan waiting for credit goes first (it reserves synchronously), then the pull loop.
    if (this.#claimWanted && !this.#claiming && !this.#aborted) {
      this.#claim().catch((error: unknown) => this.#logger.warn({ err: error }, 'claiming idle entries failed'))
    }
    const waiter = this.#creditWaiter
    if (waiter !== undefined) {
      this.#creditWaiter = undefined
      waiter()
    }
  }

  /** The message leaves the credit (settled, given back, failed). Idempotent. */
  #drop(message: DeliveredMessage): void {
    this.#dropProbation(message)
    if (!message.held) return
    message.held = false
    this.#heldCount--
    if (++this.#heldStale > COMPACT_AFTER && this.#heldStale > this.#heldCount) this.#compactHeld()
    if (message.attemptOpen) this.#openRuns.set(message.streamId, message)
    this.#ledger.release()
    if (this.#aborted && this.#heldCount === 0) this.#emptied?.()
  }

  /** A new map of the held copies only (an iteration of the old map under way goes on over the old one). */
  #compactHeld(): void {
    const live = new Map<string, DeliveredMessage>()
    for (const [id, message] of this.#held) if (message.held) live.set(id, message)
    this.#held = live
    this.#heldStale = 0
  }

  /** The copy of `id` held here, if any. */
  #heldCopy(id: string): DeliveredMessage | undefined {
    const message = this.#held.get(id)
    return message?.held === true ? message : undefined
  }

  /** The messages held here now (a snapshot). */
  #heldNow(): DeliveredMessage[] {
    const list: DeliveredMessage[] = []
    for (const message of this.#held.values()) if (message.held) list.push(message)
    return list
  }

  // ---- the pull loop ----

  async #run(): Promise<void> {
    if (this.#predecessor !== undefined) await this.#predecessor.catch(() => undefined)
    let failures = 0
    /** Consecutive failures whose error has kind 'connection' (maxConnectAttempts). */
    let connectFailures = 0
    let groupReady = false
    while (!this.#isAborted()) {
      try {
        if (!groupReady) {
          await this.#ctx.backend.ensureGroup(this.topic, this.group, this.#o.startFrom)
          groupReady = true
        }
        // A claim step in flight may still hold entries above the re-read's start: it finishes first (claiming
        // does not start again while own pending entries are re-read).
        if (this.#readPending && this.#claimRunning !== undefined) await this.#claimRunning
        const prefetched = this.#prefetch
        const pending = prefetched === undefined && this.#readPending
        let count: number
        let entries: ReadEntry[]
        if (prefetched !== undefined) {
          // The round sent while the previous one was delivered: its credit is reserved, it is the next read.
          this.#prefetch = undefined
          count = prefetched.count
          this.#readStartedAt = prefetched.sentAt
          try {
            entries = (await prefetched.reply).flat()
            this.#readNew(entries, count)
          } catch (error) {
            this.#readAhead = false
            this.#ledger.unreserve(count)
            throw error
          } finally {
            this.#readStartedAt = 0
          }
        } else {
          const credit = this.#ledger.free
          // Re-reading own pending entries bumps the delivery count of each entry read: read no more than the recovery window lets in.
          const room = pending ? this.#recoveryRoom() : credit
          if (credit <= 0 || room <= 0) {
            if (this.#state !== 'starting') this.#state = 'paused'
            await new Promise<void>((resolve) => (this.#creditWaiter = resolve))
            continue
          }
          // Read-ahead: after a full read of new entries, up to READ_AHEAD_READS reads of min(max(batchSize, 50), the
          // credit left) in one round trip; a short read ends it. The whole round is reserved and fails as one read.
          const round = !pending && this.#roundNext(credit)
          const counts = pending ? [Math.min(this.#o.batchSize, credit, room)] : round ? this.#aheadCounts(credit) : [Math.min(this.#o.batchSize, credit)]
          count = counts.reduce((a, b) => a + b, 0)
          this.#ledger.reserve(count)
          this.#readStartedAt = Date.now()
          try {
            if (pending) {
              // XREADGROUP with an id bumps the count of every entry it returns, held or not: the re-read starts above
              // every id held now, including entries a claim step took while this re-read was under way.
              this.#pendingCursor = this.#aboveHeld(this.#pendingCursor)
              entries = await this.#reader.read(this.topic, this.group, this.consumer, { count, blockMs: 0, from: 'pending', after: this.#pendingCursor })
              const last = entries[entries.length - 1]
              if (last === undefined) {
                this.#readPending = false
                this.#pendingCursor = '0'
              } else {
                this.#pendingCursor = last.id
              }
            } else {
              entries =
                round && this.#reader.readMany !== undefined
                  ? (await this.#reader.readMany(this.topic, this.group, this.consumer, counts, this.#o.blockMs)).flat()
                  : await this.#reader.read(this.topic, this.group, this.consumer, { count, blockMs: this.#o.blockMs, from: 'new' })
              this.#readNew(entries, count)
            }
          } catch (error) {
            this.#readAhead = false
            this.#ledger.unreserve(count)
            throw error
          } finally {
            this.#readStartedAt = 0
          }
        }
        // A full read of new entries, with credit for another round: that round goes out before this one is delivered.
        if (!pending) this.#sendPrefetch()
        // One clock read per batch (not per message): the time its messages were delivered.
        const now = Date.now()
        this.#lastReadAt = now
        failures = 0
        connectFailures = 0
        if (!pending && !this.#isAborted()) this.#state = 'pulling'
        let held = 0
        let i = 0
        for (; i < entries.length && !this.#isAborted(); i++) {
          const delivered = this.#deliver(entries[i] as ReadEntry, pending ? 'pending' : 'read', true, now)
          if (delivered === 'held') held++
          else if (delivered === 'lost') this.#lostUnlogged++
        }
        this.#ledger.unreserve(count - held)
        // Stopped mid-batch (the downstream unsubscribed): the rest is given back at once, no delivery counted.
        if (i < entries.length) this.#giveBackEntries(entries.slice(i).filter((e) => e.fields !== null && this.#heldCopy(e.id) === undefined))
        // Logged once per read, or once for a whole re-read of own pending entries.
        if (this.#lostUnlogged > 0 && !this.#readPending) {
          this.#logger.warn({ count: this.#lostUnlogged }, 'pending entries were deleted or trimmed; acked them as lost')
          this.#lostUnlogged = 0
        }
      } catch (error) {
        if (this.#isAborted()) break
        if (isPermanentFailure(error)) {
          this.#fail(error)
          break
        }
        failures++
        const connectionError = connectionFailureIn(error)
        connectFailures = connectionError === undefined ? 0 : connectFailures + 1
        if (connectFailures >= this.#o.maxConnectAttempts) {
          // maxConnectAttempts: the Observable errors with the ConnectionError itself.
          this.#fail(connectionError)
          break
        }
        if (error instanceof GroupMissingError) groupReady = false
        // A round sent ahead of a batch whose delivery failed: what it read is above the last id delivered, re-read below.
        await this.#dropPrefetch()
        // Only what the failed read may have delivered unseen is re-read: ids after every id seen or held.
        this.#restartPending(this.#readPending ? this.#pendingCursor : (this.#lastNewId ?? '0'))
        this.#state = 'reconnecting'
        // Capped low enough that consumption resumes soon after Redis comes back, high enough for no hot loop.
        const delay = Math.min(1_000, 50 * 2 ** Math.min(failures, 7)) * (0.5 + Math.random() / 2)
        this.#logger.warn({ err: error, failures, retryInMs: Math.round(delay) }, 'read failed; retrying')
        await sleep(delay, this.#sleeper)
      }
    }
  }

  /** What a read of new entries that returned tells: the last id delivered, whether a backlog likely waits. */
  #readNew(entries: readonly ReadEntry[], count: number): void {
    const last = entries[entries.length - 1]
    if (last !== undefined) this.#lastNewId = last.id
    this.#lastReadEmpty = entries.length === 0
    this.#readAhead = entries.length >= count
  }

  /**
   * Whether the next read of new entries is a read-ahead round (#aheadCounts, one `readMany` call): after a full
   * read, when the reader has `readMany` and the credit allows more than one batch; else one blocking read of
   * min(batchSize, credit).
   */
  #roundNext(credit: number): boolean {
    return this.#readAhead && credit > this.#o.batchSize && this.#reader.readMany !== undefined
  }

  /** A read-ahead round within `credit`: up to READ_AHEAD_READS reads, each of min(max(batchSize, 50), the credit left). */
  #aheadCounts(credit: number): number[] {
    const size = this.#readAheadRead()
    const counts: number[] = []
    for (let left = credit; left > 0 && counts.length < READ_AHEAD_READS; left -= size) counts.push(Math.min(size, left))
    return counts
  }

  /**
   * Overlap: a read of new entries came back full (a backlog waits) and the
   * credit left after its reservation still has room for a batch: the next
   * read-ahead round (not blocking) is sent now, before the entries just read
   * are delivered, so that Redis reads it while they are handled. At most one
   * is in flight; its credit is reserved before it is sent (reserved plus held
   * never exceed the credit); the pull loop takes it as its next read, so the
   * entries are delivered in stream order, and a failure of it is a failed
   * read. A stop gives back what it returns (#releasePrefetch).
   */
  #sendPrefetch(): void {
    if (!this.#readAhead || this.#prefetch !== undefined || this.#readPending || this.#isAborted()) return
    const reader = this.#reader
    if (reader.readMany === undefined) return
    const free = this.#ledger.free
    if (free < this.#o.batchSize) return
    const counts = this.#aheadCounts(free)
    const count = counts.reduce((a, b) => a + b, 0)
    this.#ledger.reserve(count)
    let reply: Promise<ReadEntry[][]>
    try {
      reply = reader.readMany(this.topic, this.group, this.consumer, counts, 0)
    } catch (error) {
      reply = Promise.reject(error instanceof Error ? error : new Error(String(error)))
    }
    // Awaited later (by the pull loop, or a stop): not an unhandled rejection meanwhile.
    reply.catch(() => undefined)
    const sentAt = Date.now()
    this.#prefetch = { reply, count, sentAt }
    // A read is in flight while this batch is delivered (stall detection).
    this.#readStartedAt = sentAt
  }

  /** A round sent ahead that the pull loop will not deliver (its batch failed): waited for, its credit freed. */
  async #dropPrefetch(): Promise<void> {
    const prefetched = this.#prefetch
    if (prefetched === undefined) return
    this.#prefetch = undefined
    // What it read is pending here, above the last id delivered: the re-read of own pending entries finds it.
    await prefetched.reply.catch(() => undefined)
    this.#readStartedAt = 0
    this.#ledger.unreserve(prefetched.count)
  }

  /**
   * Stopping with a round sent ahead and not taken by the pull loop: its
   * reply is awaited (the reader's close() waits for a round in flight) and
   * every entry it read is given back at once, no delivery counted, as the
   * unemitted rest of a batch is.
   */
  async #releasePrefetch(): Promise<void> {
    const prefetched = this.#prefetch
    if (prefetched === undefined) return
    this.#prefetch = undefined
    let entries: ReadEntry[] = []
    try {
      entries = (await prefetched.reply).flat()
    } catch {
      // A failed read: what it may have read stays pending here (re-read by this consumer name on restart, or claimed).
    }
    this.#readStartedAt = 0
    this.#ledger.unreserve(prefetched.count)
    this.#giveBackEntries(entries.filter((e) => e.fields !== null && this.#heldCopy(e.id) === undefined))
  }

  /** Ends the subscription by a permanent failure: `health()` shows it, the Observable errors. */
  #fail(error: unknown): void {
    if (this.#state === 'errored') return
    this.#error = error
    this.#state = 'errored'
    this.#logger.error({ err: error }, 'subscription failed')
    void this.stop('error')
    if (!this.#subscriber.closed) this.#subscriber.error(error)
  }

  /**
   * (Re)starts the re-read of own pending entries, in a slow start, after
   * `after` and after every id held: XREADGROUP with an id bumps the delivery
   * count of every entry it returns, so the re-read must start above the
   * messages still being handled (claimed, redelivered or read earlier).
   */
  #restartPending(after: string): void {
    this.#readPending = true
    this.#pendingCursor = this.#aboveHeld(after)
    this.#recoveryWindow = 1
  }

  /** The greatest of `from` and every id held here or acked here with its XACK in flight. */
  #aboveHeld(from: string): string {
    let max = from
    for (const [id, message] of this.#held) if (message.held && compareStreamIds(id, max) > 0) max = id
    for (const list of this.#acking) for (const id of list) if (compareStreamIds(id, max) > 0) max = id
    for (const id of this.#storeFailed) if (compareStreamIds(id, max) > 0) max = id
    return max
  }

  /** How many more recovered messages the recovery window lets in now. */
  #recoveryRoom(): number {
    return this.#recoveryWindow - this.#probation.size
  }

  /**
   * Turns one entry into a held, emitted message, or settles it at once when it
   * cannot be handled. `fromReservation`: its credit was reserved by the caller.
   * `now`: when it was delivered (read once per batch). `replacing`: the copy it supersedes (a redelivery), whose
   * credit it takes over.
   */
  #deliver(entry: ReadEntry, via: 'read' | 'pending' | 'claim', fromReservation: boolean, now: number, replacing?: DeliveredMessage): 'held' | 'skipped' | 'lost' {
    // One lookup: the value under its id may be a dropped copy (not held), overwritten below.
    const previous = this.#held.get(entry.id)
    const current = previous?.held === true ? previous : undefined
    if (current !== undefined && current !== replacing) return 'skipped'
    // Acked here, its XACK in flight: not run again (a claim, or a re-read of own pending entries, may return it).
    if (via !== 'read' && this.#isAcking(entry.id)) return 'skipped'
    if (via === 'pending' && this.#storeFailed.has(entry.id)) return 'skipped'
    if (entry.fields === null) {
      this.#ctx.instruments.lost.add(1, this.#attributes)
      void this.#ctx.acker.ack(this.topic, this.group, entry.id)
      return 'lost'
    }
    // A targeted replay for another group is acked unseen, whatever its content.
    const replayGroup = replayGroupOf(entry.fields)
    if (replayGroup !== undefined && replayGroup !== this.group) {
      void this.#ctx.acker.ack(this.topic, this.group, entry.id)
      return 'skipped'
    }
    let event: StoredEvent
    try {
      event = decodeEntry(entry.fields, this.#ctx.config.maxPayloadBytes, this.#ctx.config.maxPayloadDepth).event
    } catch (error) {
      const reason = error instanceof DecodeError ? error.message : `decode failed: ${reasonText(error)}`
      // A failed move is logged; the entry stays pending and is moved on its next delivery.
      this.#moveToDeadLetter(entry.id, entry.fields, reason, entry.deliveryCount, { error }).catch(() => undefined)
      return 'skipped'
    }
    if (entry.deliveryCount > this.#maxDeliveries) {
      // Delivered maxDeliveries times already (consumers crashed while handling it): not handled again.
      const reason = `delivery limit exceeded: delivered ${String(entry.deliveryCount)} times, the limit is ${String(this.#maxDeliveries)}`
      this.#moveToDeadLetter(entry.id, entry.fields, reason, entry.deliveryCount - 1, { event }).catch(() => undefined)
      return 'skipped'
    }
    if (via === 'claim') this.#ctx.instruments.claimed.add(1, this.#attributes)
    // Read as new (not a claim, a re-read of own pending entries or a redelivery): no consumer of the group had it before.
    const message = new DeliveredMessage(this, entry, event, now, via === 'read' && replacing === undefined && entry.deliveryCount <= 1)
    message.seq = ++this.#seq
    // A dropped copy under the same id is overwritten (one stale value less); a replaced one stops being held.
    if (previous !== undefined && current === undefined) this.#heldStale--
    this.#held.set(entry.id, message)
    message.held = true
    if (current === undefined) this.#heldCount++
    else current.held = false
    if (replacing === undefined) this.#ledger.hold(fromReservation)
    // Before it is emitted: a window that parks it at once ends its probation at once.
    if (via === 'pending' || (via === 'claim' && entry.deliveryCount >= 2)) this.#startProbation(message)
    this.#ctx.instruments.consumed.add(1, this.#attributes)
    if (this.#openRuns.size > 0 && this.#openRuns.has(entry.id)) {
      // A run of an earlier copy of this entry is still out: emitted only once it returned (held, leased, no timeout).
      message.deadline = Number.POSITIVE_INFINITY
      this.#emitWhenReturned(message)
      return 'held'
    }
    // The message is its own handling context (event, topic, group): no context object or closure per message.
    emitInContext(message, this.#subscriber, message)
    return 'held'
  }

  /** Emits a held, unemitted message once no earlier run of its entry is out; given back unseen on a stop. */
  #emitWhenReturned(message: DeliveredMessage): void {
    if (!message.held) return
    if (this.#isAborted()) {
      // Never emitted: back without counting this delivery.
      this.#giveBackMessage(message, message.deliveryCount - 1)
      return
    }
    if (this.#openRuns.has(message.streamId)) {
      this.#after(Math.min(100, this.#o.consumerTimeoutMs), () => this.#emitWhenReturned(message))
      return
    }
    message.deadline = Date.now() + this.#o.consumerTimeoutMs
    emitInContext(message, this.#subscriber, message)
  }

  #startProbation(message: DeliveredMessage): void {
    const timer = setTimeout(() => this.#endProbation(message), PROBATION_MS)
    timer.unref()
    this.#probation.set(message, timer)
  }

  /** A recovered message did not crash the process: the recovery window grows by one and lets the next one in. */
  #endProbation(message: DeliveredMessage): void {
    if (this.#dropProbation(message)) this.#wake()
  }

  #dropProbation(message: DeliveredMessage): boolean {
    // Called on every settlement; mostly nothing is on probation (no lookup then).
    if (this.#probation.size === 0) return false
    const timer = this.#probation.get(message)
    if (timer === undefined) return false
    clearTimeout(timer)
    this.#probation.delete(message)
    this.#recoveryWindow = Math.min(this.#recoveryWindow + 1, Math.max(1, this.#ledger.limit))
    return true
  }

  /** The event fields of a log line about an entry (its event, when decoded). */
  #eventFields(streamId: string, event: Event | undefined): Partial<MessageLogFields> {
    return event === undefined ? { streamId } : messageLogFields({ topic: this.topic, group: this.group, consumer: this.consumer, streamId, event })
  }

  async #moveToDeadLetter(
    id: string,
    fields: readonly string[] | null,
    reason: string,
    attempts: number,
    extra: { event?: Event; error?: unknown; handlerRuns?: number },
  ): Promise<void> {
    const error = extra.error
    const letter: { -readonly [K in keyof DeadLetterInput]: DeadLetterInput[K] } = {
      id,
      fields,
      error: reasonText(reason),
      attempts,
      consumer: this.consumer,
    }
    if (extra.handlerRuns !== undefined) letter.handlerRuns = extra.handlerRuns
    if (error instanceof Error) {
      letter.errorClass = error.name
      if (error.stack !== undefined) letter.stack = error.stack.length > MAX_STACK ? error.stack.slice(0, MAX_STACK) : error.stack
    }
    try {
      const [dlqId] = await this.#ctx.backend.deadLetter(this.topic, this.group, [letter], Date.now() - this.#ctx.config.dlqTtlMs)
      if (dlqId !== undefined && dlqId !== '') this.#ctx.instruments.deadLettered.add(1, this.#attributes)
      this.#logger.warn({ ...this.#eventFields(id, extra.event), dlqId, reason, attempts }, 'moved to the dead letter queue')
    } catch (err) {
      // Still pending: it is delivered again (and dead-lettered then) or claimed.
      this.#logger.error({ ...this.#eventFields(id, extra.event), err }, 'dead-letter move failed; the entry stays pending')
      throw err
    }
  }

  // ---- settlement, called by DeliveredMessage ----

  /** @internal */
  settleAck(message: DeliveredMessage): Promise<Outcome> {
    this.#drop(message)
    const id = message.streamId
    if (this.#giveBacks.size > 0) this.#giveBacks.delete(this.#giveBackKey(id))
    this.#ctx.instruments.acked.add(1, this.#attributes)
    // The batch's shared promise (no `then` per message): the store result is recorded by storeDone, before it resolves.
    const done = this.#ctx.acker.ack(this.topic, this.group, id, message)
    let list = this.#ackingList
    if (list === undefined || done !== this.#ackingOn) list = this.#ackingBatch(done)
    list.push(id)
    this.#ackingIndex?.add(id)
    return done
  }

  /** A new XACK batch's list of ids in flight, dropped once the batch's promise settled (after every storeDone of it). */
  #ackingBatch(done: Promise<'acked' | 'failed'>): string[] {
    const list: string[] = []
    this.#ackingList = list
    this.#ackingOn = done
    this.#acking.add(list)
    void done.then(() => {
      this.#acking.delete(list)
      this.#ackingIndex = undefined
      if (this.#ackingList === list) {
        this.#ackingList = undefined
        this.#ackingOn = undefined
      }
    })
    return list
  }

  /** Whether an ack of `id` from here is in flight. */
  #isAcking(id: string): boolean {
    if (this.#acking.size === 0) return false
    let index = this.#ackingIndex
    if (index === undefined) {
      index = new Set()
      for (const list of this.#acking) for (const acked of list) index.add(acked)
      this.#ackingIndex = index
    }
    return index.has(id)
  }

  /** Tracks entries whose store failed (still pending here, unleased) until a later settlement of them succeeds. */
  #storeResult(id: string, ok: boolean): void {
    if (ok) {
      if (this.#storeFailed.size > 0) this.#storeFailed.delete(id)
      return
    }
    if (this.#storeFailed.size >= MAX_TRACKED_GIVE_BACKS) this.#storeFailed.clear()
    this.#storeFailed.add(id)
  }

  /** @internal */
  async settleDeadLetter(message: DeliveredMessage, reason: unknown): Promise<Outcome> {
    this.#dropProbation(message)
    let ok = false
    try {
      const error = reason instanceof Error ? reason : message.lastError
      await this.#moveToDeadLetter(message.streamId, message.fields, reasonText(reason), message.deliveryCount, {
        event: message.event,
        error,
        handlerRuns: message.runs,
      })
      ok = true
      if (this.#giveBacks.size > 0) this.#giveBacks.delete(this.#giveBackKey(message.streamId))
    } catch {
      // Logged by the move; the entry stays pending ('failed').
    }
    this.#storeResult(message.streamId, ok)
    this.#drop(message)
    return message.stored('dead-lettered', ok)
  }

  /** @internal Keeps the credit while waiting, then claims the entry back with a higher delivery count. */
  settleNack(message: DeliveredMessage, error: unknown, options: NackOptions | undefined): void {
    this.#ctx.instruments.nacked.add(1, this.#attributes)
    this.#dropProbation(message)
    if (this.#aborted) {
      // Stopping: given back at once (this delivery counted), for a restart with this name or another consumer.
      this.#giveBackMessage(message, message.deliveryCount)
      return
    }
    const delay = options?.delay ?? Math.min(this.#retry.initialDelay * 2 ** (message.deliveryCount - 1), 60_000)
    this.#logger.info({ ...this.#eventFields(message.streamId, message.event), err: error, retryInMs: delay }, 'nacked; will be delivered again')
    this.#after(Number.isFinite(delay) ? Math.max(0, delay) : 0, () => void this.#redeliver(message))
  }

  /** A timer that may wait past 2^31 − 1 ms; cleared on stop. */
  #after(ms: number, callback: () => void): void {
    const timer = setLongTimeout(() => {
      this.#timers.delete(timer)
      callback()
    }, ms)
    this.#timers.add(timer)
  }

  async #redeliver(message: DeliveredMessage): Promise<void> {
    if (!message.held) return
    if (this.#aborted) {
      this.#giveBackMessage(message, message.deliveryCount)
      return
    }
    // A timed-out run still going: its new copy is not started here until that run returned, however long it
    // takes (issue 10: never two runs of one entry in one consumer). Meanwhile this copy stays held and its lease
    // is renewed, so a run that never returns keeps its entry in this consumer (and its credit) until the
    // subscription stops; another consumer gets it only by claiming it after this one stopped renewing.
    if (message.attemptOpen) {
      this.#after(Math.min(100, this.#o.consumerTimeoutMs), () => void this.#redeliver(message))
      return
    }
    try {
      const [entry] = await this.#ctx.backend.redeliver(this.topic, this.group, this.consumer, [message.streamId])
      if (!isHeld(message)) return
      if (this.#isAborted()) {
        if (entry !== undefined) this.#giveBackMessage(message, entry.deliveryCount)
        else this.#drop(message)
        return
      }
      if (entry === undefined) {
        // Claimed by another consumer meanwhile, or deleted: no longer ours.
        message.transition('redelivered')
        this.#drop(message)
        return
      }
      this.#ctx.instruments.retried.add(1, this.#attributes)
      // The new copy takes over the old one's credit: no moment with a free slot that a claim could take.
      message.transition('redelivered')
      const result = this.#deliver(entry, 'read', false, Date.now(), message)
      if (result !== 'held') {
        if (isHeld(message)) this.#drop(message)
        if (result === 'lost') this.#logger.warn({ streamId: entry.id }, 'a nacked entry was deleted or trimmed; acked it as lost')
      }
    } catch (error) {
      // The entry is still ours in the pending list, and still held: try again later (a claim would also find it).
      this.#logger.warn({ ...this.#eventFields(message.streamId, message.event), err: error }, 'redelivery failed; will try again')
      this.#after(1_000, () => void this.#redeliver(message))
    }
  }

  /** @internal A message given back unsettled (`releaseUnhandled`): claimable at once, no delivery counted. */
  giveBack(message: DeliveredMessage): void {
    if (!message.held) return
    const waiting = message.phase === 'waiting'
    this.#giveBackMessage(message, waiting ? message.deliveryCount : message.deliveryCount - 1)
  }

  #giveBackMessage(message: DeliveredMessage, retryCount: number): void {
    if (!message.withdraw()) return
    this.#queueGiveBack({ id: message.streamId, retryCount: Math.max(0, retryCount) })
    this.#drop(message)
  }

  #giveBackEntries(entries: readonly ReadEntry[]): void {
    for (const e of entries) this.#queueGiveBack({ id: e.id, retryCount: Math.max(0, e.deliveryCount - 1) })
  }

  /** Give-backs go out in one call per tick. */
  #queueGiveBack(item: GiveBackItem): void {
    this.#giveBackQueue.push(item)
    if (this.#giveBackQueue.length === 1) queueMicrotask(() => this.#flushGiveBacks())
  }

  #flushGiveBacks(): void {
    const items = this.#giveBackQueue
    if (items.length === 0) return
    this.#giveBackQueue = []
    const backend = this.#ctx.backend
    if (backend.giveBack === undefined) return
    const call = backend
      .giveBack(this.topic, this.group, this.consumer, items, this.#o.claimMinIdleMs)
      .then(
        () => undefined,
        (error: unknown) => this.#logger.warn({ err: error, count: items.length }, 'give-back failed; the entries stay pending until idle'),
      )
      .finally(() => this.#giveBackCalls.delete(call))
    this.#giveBackCalls.add(call)
  }

  #giveBackKey(id: string): string {
    return `${this.topic}\u0000${this.group}\u0000${id}`
  }

  /** @internal */
  storeDone(message: DeliveredMessage, ok: boolean): void {
    // Its id leaves #acking with its whole batch, once the batch's promise settles (a microtask after this).
    this.#storeResult(message.streamId, ok)
  }

  /** @internal */
  begun(message: DeliveredMessage, now: number): void {
    if (message.seq > this.#maxStartedSeq) this.#maxStartedSeq = message.seq
    this.#lastBeginAt = now
    // Started: it is no longer "given back unstarted".
    if (this.#giveBacks.size > 0) this.#giveBacks.delete(this.#giveBackKey(message.streamId))
  }

  /** @internal Parked by a window or join, or in a backoff: no longer on probation. */
  parked(message: DeliveredMessage): void {
    this.#endProbation(message)
  }

  /** @internal A timed-out run returned: its redelivery (polled in #redeliver) may go on. */
  attemptReturned(message: DeliveredMessage): void {
    // A held copy's redelivery polls attemptOpen (#redeliver); a copy no longer held frees its entry's next delivery.
    if (this.#openRuns.size > 0 && this.#openRuns.get(message.streamId) === message) this.#openRuns.delete(message.streamId)
  }

  /** @internal The payload getter found an undecodable payload: dead-letter it, and report the error. */
  malformed(message: DeliveredMessage, error: DecodeError): MalformedPayloadError {
    const failure = new MalformedPayloadError(message.streamId, error.message, { cause: error })
    // The letter's reason starts with the decode reason code (e.g. `malformed_json:`); its class is MalformedPayloadError.
    message.lastError = failure
    void message.deadLetter(error.message)
    // Thrown into the pipeline: an unsubscribe during this turn is this error ending the subscription.
    this.#thrown = failure
    queueMicrotask(() => {
      if (this.#thrown === failure) this.#thrown = undefined
    })
    return failure
  }

  /** @internal Nothing left to deliver right now (for windows' idle timeout). */
  idle(): boolean {
    // Room in the credit (not counting the reservation of the blocking read in flight, which waits for entries that
    // are not there): out of credit, entries may wait unread.
    return this.#lastReadEmpty && !this.#readPending && this.#ledger.held < this.#ledger.limit
  }

  /** @internal */
  get maxDeliveries(): number {
    return this.#maxDeliveries
  }

  /** @internal The credit limit (windows and joins close early before holding more). */
  get maxPending(): number {
    return this.#ledger.limit
  }

  /** @internal */
  get retry(): RetryDefaults {
    return this.#retry
  }

  /** @internal */
  get consumerTimeoutMs(): number {
    return this.#o.consumerTimeoutMs
  }

  // ---- timers ----

  #expireTimedOut(): void {
    const now = Date.now()
    let neverStarted = 0
    for (const message of this.#heldNow()) {
      if (message.deadline > now) continue
      const phase = message.phase
      if (phase === 'running') message.expireAttempt()
      else if (phase === 'queued' && (message.seq < this.#maxStartedSeq || now - this.#lastBeginAt >= this.#o.consumerTimeoutMs)) {
        // Dropped: a message emitted after it was started (a filter skipped it), or nothing started for a whole
        // timeout. An unstarted message at the head of a queue that is progressing in order (a mergeMap buffer)
        // keeps its lease.
        neverStarted++
        this.#giveBackUnstarted(message)
      }
    }
    if (neverStarted > 0 && !this.#warnedNeverStarted) {
      this.#warnedNeverStarted = true
      this.#logger.warn(
        { count: neverStarted, consumerTimeoutMs: this.#o.consumerTimeoutMs },
        'messages were emitted but not started within consumerTimeout; given back without counting a delivery. Likely cause: an operator that drops messages without settling them (filter, throttleTime, debounceTime, distinctUntilChanged, a cancelled switchMap) — use filterMessages — or a hand-written mergeMap/concatMap that queues them without calling msg.begin()',
      )
    }
  }

  /** Not started within the timeout: given back (no delivery counted), or dead-lettered after maxGiveBacks. */
  #giveBackUnstarted(message: DeliveredMessage): void {
    const key = this.#giveBackKey(message.streamId)
    const times = (this.#giveBacks.get(key) ?? 0) + 1
    if (times >= this.#o.maxGiveBacks) {
      this.#giveBacks.delete(key)
      if (!message.withdraw()) return
      this.#drop(message)
      this.#moveToDeadLetter(message.streamId, message.fields, `never_started: given back ${String(times)} times without any consumer starting it`, message.deliveryCount, {
        event: message.event,
        handlerRuns: 0,
      }).catch(() => undefined)
      return
    }
    if (this.#giveBacks.size >= MAX_TRACKED_GIVE_BACKS) this.#giveBacks.clear()
    this.#giveBacks.set(key, times)
    this.#giveBackMessage(message, message.deliveryCount - 1)
  }

  async #renewLeases(afterMs: number): Promise<void> {
    const now = Date.now()
    const ids: string[] = []
    for (const message of this.#held.values()) if (message.held && now - message.deliveredAt >= afterMs) ids.push(message.streamId)
    if (ids.length === 0) return
    const renewed = new Set(await this.#ctx.backend.renewLeases(this.topic, this.group, this.consumer, ids))
    for (const id of ids) {
      if (!renewed.has(id)) this.#logger.warn(this.#eventFields(id, this.#heldCopy(id)?.event), 'lease lost: another consumer claimed this message')
    }
  }

  async #claimTick(): Promise<void> {
    await this.#claim()
    await this.#removeStaleConsumers()
  }

  /**
   * Claims entries idle longer than claimMinIdleTime from any consumer of the
   * group (XAUTOCLAIM, following its cursor), within the credit. Out of credit,
   * the scan goes on as soon as credit comes free, before the pull loop reads
   * new entries: a busy consumer still takes over a dead one's work.
   */
  async #claim(): Promise<void> {
    if (this.#claiming || this.#o.claimIntervalMs <= 0) return
    if (this.#readPending) {
      // Own pending entries are re-read first; claiming goes on afterwards.
      this.#claimWanted = true
      return
    }
    // Claiming bumps delivery counts: a new scan (of entries of consumers that may have been killed by one of them) starts slow.
    if (this.#claimCursor === '0-0') this.#recoveryWindow = 1
    this.#claiming = true
    let claimEnded = (): void => undefined
    this.#claimRunning = new Promise<void>((resolve) => (claimEnded = resolve))
    const lost = { count: 0 }
    try {
      let rounds = 0
      while (!this.#isAborted()) {
        const count = Math.min(this.#o.batchSize, this.#ledger.free, this.#recoveryRoom())
        if (count <= 0 || rounds++ >= 100) {
          this.#claimWanted = true
          return
        }
        if (await this.#claimStep(count, lost)) {
          this.#claimWanted = false
          return
        }
      }
    } catch (error) {
      // Retried at the next tick, from the start.
      this.#claimWanted = false
      this.#claimCursor = '0-0'
      throw error
    } finally {
      this.#claiming = false
      this.#claimRunning = undefined
      claimEnded()
      if (lost.count > 0) this.#logger.warn({ count: lost.count }, 'idle pending entries were deleted or trimmed; acked them as lost')
    }
  }

  /** One XAUTOCLAIM step of `count` entries; true when the scan is complete. */
  async #claimStep(count: number, lost: { count: number }): Promise<boolean> {
    this.#ledger.reserve(count)
    let result
    try {
      result = await this.#ctx.backend.claimIdle(this.topic, this.group, this.consumer, { minIdleMs: this.#o.claimMinIdleMs, cursor: this.#claimCursor, count })
    } catch (error) {
      this.#ledger.unreserve(count)
      throw error
    }
    this.#claimCursor = result.cursor
    let held = 0
    const rest: ReadEntry[] = []
    const now = Date.now()
    for (const entry of result.entries) {
      if (this.#isAborted()) {
        rest.push(entry)
        continue
      }
      const delivered = this.#deliver(entry, 'claim', true, now)
      if (delivered === 'held') held++
      else if (delivered === 'lost') lost.count++
    }
    // One path for every unused unit: it wakes the pull loop (the stall of a claim that found nothing).
    this.#ledger.unreserve(count - held)
    if (rest.length > 0) this.#giveBackEntries(rest.filter((e) => e.fields !== null))
    if (result.deletedIds.length > 0) {
      this.#ctx.instruments.lost.add(result.deletedIds.length, this.#attributes)
      lost.count += result.deletedIds.length
      await this.#ctx.backend.ack(this.topic, this.group, result.deletedIds)
    }
    return result.cursor === '0-0'
  }

  async #trimDeadLetters(): Promise<void> {
    const removed = await this.#ctx.backend.dlqTrim(this.topic, Date.now() - this.#ctx.config.dlqTtlMs)
    if (removed > 0) this.#logger.info({ removed }, 'trimmed expired dead letters')
  }

  async #removeStaleConsumers(): Promise<void> {
    const staleAfter = this.#ctx.config.staleConsumerTimeoutMs
    for (const c of await this.#ctx.backend.consumers(this.topic, this.group)) {
      if (c.name !== this.consumer && c.pending === 0 && c.idleMs > staleAfter) {
        if (await this.#ctx.backend.deleteIdleConsumer(this.topic, this.group, c.name)) {
          this.#logger.info({ staleConsumer: c.name, idleMs: c.idleMs }, 'deleted a stale consumer')
        }
      }
    }
  }

  // ---- stopping ----

  /**
   * Stops pulling; the unemitted rest of a read is given back at once. Then:
   * - `unsubscribe` (the downstream went away): started messages drain (up to
   *   `drainTimeout`); emitted messages not started keep their lease until
   *   they are settled or their consumer timeout passes (then given back).
   * - `close`, `signal`, `takeover`, `error`: unstarted messages are given back
   *   at once; started ones drain; `close`/`signal` then complete the Observable.
   * Past the drain timeout, the running messages' signals abort (they stay
   * pending). Acks and give-backs are flushed before the promise resolves.
   * Resolves once drained; with `close`/`takeover`, once nothing is held.
   */
  stop(reason: StopReason = 'unsubscribe'): Promise<void> {
    const firstReason = this.#thrown !== undefined && reason === 'unsubscribe' ? 'error' : reason
    if (this.#stopping === undefined) {
      this.#stopReason = firstReason
      if (firstReason === 'error' && this.#state !== 'errored') {
        this.#error = this.#thrown
        this.#state = 'errored'
      }
      this.#stopping = this.#stop()
      return reason === 'close' || reason === 'takeover' ? this.#stopping.then(() => this.#finished) : this.#stopping
    }
    if (reason !== 'unsubscribe' && reason !== 'signal') {
      // A stronger stop while stopping: nothing more may begin, and what is not started goes back now.
      this.#stopReason = reason
      this.#giveBackUnstartedNow()
      return this.#stopping.then(() => this.#finished)
    }
    return this.#stopping
  }

  #giveBackUnstartedNow(): void {
    for (const message of this.#heldNow()) {
      const phase = message.phase
      if (phase === 'queued') this.#giveBackMessage(message, message.deliveryCount - 1)
      else if (phase === 'waiting') this.#giveBackMessage(message, message.deliveryCount)
    }
    this.#flushGiveBacks()
  }

  async #stop(): Promise<void> {
    const reason = this.#stopReason ?? 'unsubscribe'
    this.#aborted = true
    if (this.#state !== 'errored') this.#state = 'stopping'
    this.#finished = new Promise<void>((resolve) => (this.#finish = resolve))
    this.#sleeper.wake?.()
    this.#creditWaiter?.()
    for (const timer of this.#intervals) if ((timer as NodeJS.Timeout & { pulls?: boolean }).pulls === true) clearInterval(timer)
    for (const timer of this.#timers) timer.clear()
    this.#timers.clear()
    for (const timer of this.#probation.values()) clearTimeout(timer)
    this.#probation.clear()
    this.#releasePromoter?.()
    // Nacked messages wait for a redelivery that will not come here: given back (their delivery counted).
    for (const message of this.#heldNow()) if (message.phase === 'waiting') this.#giveBackMessage(message, message.deliveryCount)
    if (reason !== 'unsubscribe') this.#giveBackUnstartedNow()
    await this.#reader.close().catch(() => undefined)
    // A read-ahead round sent before the last batch was delivered, never taken: what it read goes back.
    await this.#releasePrefetch()
    const deadline = Date.now() + this.#o.drainTimeoutMs
    while (Date.now() < deadline && this.#hasStarted()) await new Promise((r) => setTimeout(r, 10))
    // Past the drain timeout: the runs still going are told to stop; their entries stay pending.
    for (const message of this.#heldNow()) if (message.phase === 'running') message.abort(new ClosedError('subscription (drain timeout)'))
    this.#flushGiveBacks()
    await this.#ctx.acker.flush()
    while (this.#giveBackCalls.size > 0) await Promise.allSettled([...this.#giveBackCalls])
    if (this.#state !== 'errored') this.#state = 'stopped'
    this.#claimerAlive = false
    if (reason === 'close' || reason === 'signal') {
      // Started messages past the drain timeout stay pending; nothing more is emitted.
      if (!this.#subscriber.closed) this.#subscriber.complete()
    }
    if (reason === 'error' && !this.#subscriber.closed) this.#subscriber.error(this.#error)
    // Unsubscribed with emitted, unstarted messages: they keep their lease until settled or timed out (lingering).
    if (reason === 'unsubscribe' && this.#heldNow().some((m) => m.phase === 'queued')) {
      void this.#linger()
      return
    }
    await this.#end()
  }

  /** Started messages still running (drain waits for these only). */
  #hasStarted(): boolean {
    for (const message of this.#held.values()) {
      if (!message.held) continue
      const phase = message.phase
      if (phase === 'running' || phase === 'settling') return true
    }
    return false
  }

  async #linger(): Promise<void> {
    if (this.#heldCount > 0) await new Promise<void>((resolve) => (this.#emptied = resolve))
    this.#flushGiveBacks()
    await this.#ctx.acker.flush()
    while (this.#giveBackCalls.size > 0) await Promise.allSettled([...this.#giveBackCalls])
    await this.#end()
  }

  async #end(): Promise<void> {
    for (const timer of this.#intervals) clearInterval(timer)
    this.#intervals.clear()
    for (const timer of this.#timers) timer.clear()
    this.#timers.clear()
    for (const message of this.#held.values()) message.held = false
    this.#held.clear()
    this.#heldCount = 0
    this.#heldStale = 0
    // A consumer that owns no pending entries leaves its group (atomic: only when it has none).
    try {
      await this.#ctx.backend.deleteIdleConsumer(this.topic, this.group, this.consumer)
    } catch {
      // The backend may be closing; a stale consumer is removed by the others later.
    }
    this.#finish?.()
    this.#ctx.onClosed(this)
  }
}
