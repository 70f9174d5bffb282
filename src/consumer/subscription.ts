import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import type { Subscriber } from 'rxjs'
import type { GroupReader, ReadEntry, StartFrom, StreamBackend } from '../backend/types.js'
import type { Config } from '../config/types.js'
import { runInHandlingContext } from '../context.js'
import { ConsumerTimeoutError, DecodeError, GroupMissingError } from '../errors.js'
import { decodeEntry, type Event, type StoredEvent } from '../event.js'
import type { Logger } from '../logger.js'
import { reasonText, type NackOptions, type Outcome } from '../settle.js'
import { creditLimit, creditLimitOf } from '../shared-settlement.js'
import { messagingAttributes, type Instruments } from '../telemetry/instruments.js'
import { messageLogFields, type MessageLogFields } from '../telemetry/logging.js'
import type { AckBatcher } from './acker.js'
import { isWithdrawn, messageWithdrawn, releaseMessage, releaseUnhandled, type Message, type RetryDefaults } from './message.js'

/**
 * Options of `topic(name).consume(options)`. Every numeric option defaults to
 * the Config (the `EVENT_*` variables).
 */
export interface ConsumeOptions {
  /** The consumer group: every group receives every event. */
  readonly group: string
  /** A stable consumer name; a restarted consumer with the same name first receives its own pending messages. Default: host-pid-random. */
  readonly consumer?: string
  /** Most entries per read (XREADGROUP COUNT). */
  readonly batchSize?: number
  /**
   * Most unsettled messages at any time (the credit): memory stays bounded
   * whatever the backlog. Messages recovered after a crash (own pending
   * entries re-read on restart, claimed entries) come in a slow start: one at
   * first, then twice as many with every round that did not crash the process,
   * so that a poison message that kills its process is re-delivered alone and
   * does not use up the delivery counts of the messages pending with it.
   */
  readonly maxPendingMessages?: number
  /** How long one read blocks waiting for new entries, in ms. Default 2000. */
  readonly blockMs?: number
  /** A message unsettled for this long (ms) is nacked with a ConsumerTimeoutError. */
  readonly consumerTimeout?: number
  /** Where a new group starts: `beginning` (retained history, default) or `latest`. */
  readonly startFrom?: StartFrom
  /** On unsubscribe, how long (ms) to wait for in-flight messages to settle. Default: min(consumerTimeout, 10 s). */
  readonly drainTimeout?: number
  /** Claim entries idle this long (ms) from other consumers. */
  readonly claimMinIdleTime?: number
  /** How often (ms) to look for idle entries to claim; 0 disables claiming. */
  readonly claimInterval?: number
}

/** What a subscription is doing, for health checks. */
export type SubscriptionState = 'starting' | 'pulling' | 'paused' | 'reconnecting' | 'stopping' | 'stopped'

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
  readonly lastReadAt: number | null
  readonly claimerAlive: boolean
}

let consumerSequence = 0
/** A consumer name unique to this process: host-pid-random. */
export function defaultConsumerName(): string {
  return `${hostname().replace(/[^A-Za-z0-9._:-]/g, '_')}-${process.pid}-${(consumerSequence++).toString(36)}${randomBytes(3).toString('hex')}`
}

/**
 * A recovered message (re-read from the consumer's own pending list, or
 * claimed with a delivery count of 2 or more) is on probation until it is
 * settled, parked by a window or join (`holdUntil(Infinity)`), or has been held
 * this long without crashing the process.
 */
const PROBATION_MS = 1_000

const sleep = (ms: number, signal: { aborted: boolean; wake?: () => void }): Promise<void> =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal.wake = () => {
      clearTimeout(timer)
      resolve()
    }
  })

/**
 * One consumer of a group: the credit-based pull loop and the timers (consumer
 * timeout, leases, claiming) of one subscription to a topic Observable.
 */
export class Subscription {
  readonly topic: string
  readonly group: string
  readonly consumer: string
  readonly #ctx: EngineContext
  readonly #subscriber: Subscriber<Message>
  readonly #reader: GroupReader
  readonly #held = new Map<string, DeliveredMessage>()
  readonly #maxPending: number
  readonly #batchSize: number
  readonly #blockMs: number
  readonly #consumerTimeoutMs: number
  readonly #drainTimeoutMs: number
  readonly #claimMinIdleMs: number
  readonly #claimIntervalMs: number
  readonly #startFrom: StartFrom
  readonly #maxDeliveries: number
  readonly #retry: RetryDefaults
  readonly #logger: Logger
  readonly #attributes
  readonly #timers = new Set<NodeJS.Timeout>()
  readonly #signal: { aborted: boolean; wake?: () => void } = { aborted: false }
  #state: SubscriptionState = 'starting'
  #lastReadAt: number | null = null
  #creditWaiter: (() => void) | undefined
  #readPending = true
  #pendingCursor = '0'
  /** The last id a new-entry read (`>`) delivered: own pending entries after it can only come from a read that failed. */
  #lastNewId: string | undefined
  /** Where the current re-read of own pending entries started. */
  #pendingStart = '0'
  /**
   * Slow start of recovery: at most this many recovered messages on probation
   * at once. It starts at 1 on every (re)start of the pending re-read (and of
   * a claim scan) and grows by one for every message whose probation ends, so
   * it doubles with every round of recovered messages that did not crash the
   * process (as TCP's congestion window). A poison message that kills its
   * process is thus re-read alone, and the entries behind it keep their
   * delivery counts.
   */
  #recoveryWindow = 1
  /** The recovered messages on probation, with the timer that ends it after PROBATION_MS. */
  readonly #probation = new Map<DeliveredMessage, NodeJS.Timeout>()
  #claimCursor = '0-0'
  /** A claim scan is unfinished (out of credit): the next release goes on with it, before the pull loop reads new entries. */
  #claimWanted = false
  #claiming = false
  /** Credit promised to a read or claim in flight, so that together they never exceed the credit. */
  #reserved = 0
  #lostUnlogged = 0
  #claimerAlive = false
  /** Set once stop() has drained: lease renewal runs until then. */
  #drained = false
  #leaseTimer: NodeJS.Timeout | undefined
  #stopping: Promise<void> | undefined
  #releasePromoter: (() => void) | undefined

  constructor(ctx: EngineContext, topic: string, options: ConsumeOptions, subscriber: Subscriber<Message>) {
    const c = ctx.config
    this.#ctx = ctx
    this.topic = topic
    this.group = options.group
    this.consumer = options.consumer ?? defaultConsumerName()
    this.#subscriber = subscriber
    this.#maxPending = options.maxPendingMessages ?? c.maxPendingMessages
    this.#batchSize = options.batchSize ?? c.batchSize
    this.#blockMs = options.blockMs ?? 2_000
    this.#consumerTimeoutMs = options.consumerTimeout ?? c.consumerTimeoutMs
    this.#drainTimeoutMs = options.drainTimeout ?? Math.min(this.#consumerTimeoutMs, 10_000)
    this.#claimMinIdleMs = options.claimMinIdleTime ?? c.claimMinIdleTimeMs
    this.#claimIntervalMs = options.claimInterval ?? c.claimIntervalMs
    this.#startFrom = options.startFrom ?? 'beginning'
    this.#maxDeliveries = c.maxRetries + 1
    this.#retry = { maxRetries: c.maxRetries, initialDelay: c.retryBackoffMs }
    this.#logger = ctx.logger.child({ topic, group: this.group, consumer: this.consumer })
    this.#attributes = messagingAttributes(topic, this.group)
    this.#reader = ctx.backend.createReader()
  }

  /** Starts pulling. */
  start(): void {
    this.#releasePromoter = this.#ctx.acquirePromoter(this.topic)
    this.#every(Math.max(20, Math.min(1_000, this.#consumerTimeoutMs / 10)), () => this.#expireTimedOut())
    const leaseEvery = Math.max(50, Math.floor(this.#claimMinIdleMs / 3))
    // Leases are renewed while stop() drains too: a message still being handled must not be claimed.
    this.#leaseTimer = this.#every(leaseEvery, () => this.#renewLeases(leaseEvery), true)
    if (this.#claimIntervalMs > 0) {
      this.#claimerAlive = true
      this.#every(this.#claimIntervalMs, () => this.#claimTick())
    }
    // Dead letters older than dlqTtl are trimmed on every move and here, periodically (one XTRIM MINID).
    const dlqTtl = this.#ctx.config.dlqTtlMs
    this.#every(Math.min(60_000, Math.max(100, Math.floor(dlqTtl / 10))), () => this.#trimDeadLetters())
    void this.#run()
  }

  get status(): SubscriptionStatus {
    return {
      topic: this.topic,
      group: this.group,
      consumer: this.consumer,
      state: this.#state,
      held: this.#held.size,
      lastReadAt: this.#lastReadAt,
      claimerAlive: this.#claimerAlive,
    }
  }

  #every(ms: number, task: () => Promise<void> | void, whileDraining = false): NodeJS.Timeout {
    let running = false
    const timer = setInterval(() => {
      if (running || (whileDraining ? this.#drained : this.#aborted())) return
      running = true
      Promise.resolve()
        .then(task)
        .catch((error: unknown) => this.#logger.warn({ err: error }, 'background task failed'))
        .finally(() => (running = false))
    }, ms)
    timer.unref()
    this.#timers.add(timer)
    return timer
  }

  /** A method, not a property read, so that checks after an await are not narrowed away. */
  #aborted(): boolean {
    return this.#signal.aborted
  }

  #credit(): number {
    return this.#maxPending - this.#held.size - this.#reserved
  }

  async #run(): Promise<void> {
    let failures = 0
    let groupReady = false
    while (!this.#aborted()) {
      try {
        if (!groupReady) {
          await this.#ctx.backend.ensureGroup(this.topic, this.group, this.#startFrom)
          groupReady = true
        }
        const credit = this.#credit()
        const pending = this.#readPending
        // Re-reading own pending entries bumps the delivery count of each entry read: read no more than the recovery window lets in.
        const room = pending ? this.#recoveryRoom() : credit
        if (credit <= 0 || room <= 0) {
          this.#state = 'paused'
          await new Promise<void>((resolve) => (this.#creditWaiter = resolve))
          continue
        }
        this.#state = 'pulling'
        const count = Math.min(this.#batchSize, credit, room)
        let entries: ReadEntry[]
        this.#reserved += count
        try {
          if (pending) {
            entries = await this.#reader.read(this.topic, this.group, this.consumer, { count, blockMs: 0, from: 'pending', after: this.#pendingCursor })
            const last = entries[entries.length - 1]
            if (last === undefined) {
              this.#readPending = false
              this.#pendingCursor = '0'
            } else {
              this.#pendingCursor = last.id
            }
          } else {
            entries = await this.#reader.read(this.topic, this.group, this.consumer, { count, blockMs: this.#blockMs, from: 'new' })
            const last = entries[entries.length - 1]
            if (last !== undefined) this.#lastNewId = last.id
          }
        } finally {
          this.#reserved -= count
        }
        if (this.#aborted()) {
          // Read after stop began: these stay pending for this consumer name and are read again on restart, or claimed.
          break
        }
        this.#lastReadAt = Date.now()
        failures = 0
        for (const entry of entries) if (!this.#deliver(entry, pending ? 'pending' : 'read')) this.#lostUnlogged++
        // Logged once per read, or once for a whole re-read of own pending entries.
        if (this.#lostUnlogged > 0 && !this.#readPending) {
          this.#logger.warn({ count: this.#lostUnlogged }, 'pending entries were deleted or trimmed; acked them as lost')
          this.#lostUnlogged = 0
        }
      } catch (error) {
        if (this.#aborted()) break
        failures++
        if (error instanceof GroupMissingError) groupReady = false
        // A failure during a re-read starts that re-read over; otherwise only ids after the last one seen are re-read.
        this.#restartPending(this.#readPending ? this.#pendingStart : (this.#lastNewId ?? '0'))
        this.#state = 'reconnecting'
        // Capped low enough that consumption resumes soon after Redis comes back, high enough for no hot loop.
        const delay = Math.min(1_000, 50 * 2 ** Math.min(failures, 7)) * (0.5 + Math.random() / 2)
        this.#logger.warn({ err: error, failures, retryInMs: Math.round(delay) }, 'read failed; retrying')
        await sleep(delay, this.#signal)
      }
    }
  }

  /**
   * (Re)starts the re-read of own pending entries, in a slow start: from the
   * start, or from `after` (exclusive). Re-reading bumps each entry's delivery
   * count, so after a failed read only what that read may have delivered unseen
   * (ids after the last one seen) is re-read, not the messages still being handled.
   */
  #restartPending(after = '0'): void {
    this.#readPending = true
    this.#pendingStart = after
    this.#pendingCursor = after
    this.#recoveryWindow = 1
  }

  /** How many more recovered messages the recovery window lets in now. */
  #recoveryRoom(): number {
    return this.#recoveryWindow - this.#probation.size
  }

  /**
   * Turns one entry into a message, or settles it at once when it cannot be
   * handled. Returns false for an entry whose body is gone (acked as lost; the
   * caller logs them, once per batch).
   */
  #deliver(entry: ReadEntry, via: 'read' | 'pending' | 'claim'): boolean {
    if (this.#held.has(entry.id)) return true
    if (entry.fields === null) {
      this.#ctx.instruments.lost.add(1, this.#attributes)
      void this.#ctx.acker.ack(this.topic, this.group, entry.id)
      return false
    }
    let event: StoredEvent
    try {
      const decoded = decodeEntry(entry.fields, this.#ctx.config.maxPayloadBytes)
      if (decoded.replayGroup !== undefined && decoded.replayGroup !== this.group) {
        void this.#ctx.acker.ack(this.topic, this.group, entry.id)
        return true
      }
      event = decoded.event
    } catch (error) {
      const reason = error instanceof DecodeError ? error.message : `decode failed: ${reasonText(error)}`
      // A failed move is logged; the entry stays pending and is moved on its next delivery.
      this.#moveToDeadLetter(entry.id, entry.fields, reason, entry.deliveryCount).catch(() => undefined)
      return true
    }
    if (entry.deliveryCount > this.#maxDeliveries) {
      // Delivered maxDeliveries times already (consumers crashed while handling it): not handled again.
      const reason = `delivery limit exceeded: delivered ${entry.deliveryCount} times, the limit is ${this.#maxDeliveries}`
      this.#moveToDeadLetter(entry.id, entry.fields, reason, entry.deliveryCount - 1, event).catch(() => undefined)
      return true
    }
    if (via === 'claim') this.#ctx.instruments.claimed.add(1, this.#attributes)
    const message = new DeliveredMessage(this, entry, event)
    this.#held.set(entry.id, message)
    // Before it is emitted: a window that parks it at once ends its probation at once.
    if (via === 'pending' || (via === 'claim' && entry.deliveryCount >= 2)) this.#startProbation(message)
    this.#ctx.instruments.consumed.add(1, this.#attributes)
    runInHandlingContext({ event, topic: this.topic, group: this.group }, () => this.#subscriber.next(message))
    return true
  }

  #startProbation(message: DeliveredMessage): void {
    const timer = setTimeout(() => this.endProbation(message), PROBATION_MS)
    timer.unref()
    this.#probation.set(message, timer)
  }

  /**
   * @internal A recovered message did not crash the process: it was settled,
   * parked by a window or join, given back, or held for PROBATION_MS. The
   * recovery window grows by one and lets the next recovered message in.
   */
  endProbation(message: DeliveredMessage): void {
    if (!this.#dropProbation(message)) return
    this.#wake()
  }

  #dropProbation(message: DeliveredMessage): boolean {
    const timer = this.#probation.get(message)
    if (timer === undefined) return false
    clearTimeout(timer)
    this.#probation.delete(message)
    this.#recoveryWindow = Math.min(this.#recoveryWindow + 1, Math.max(1, this.#maxPending))
    return true
  }

  /** The event fields of a log line about an entry (its event, when decoded). */
  #eventFields(streamId: string, event: Event | undefined): Partial<MessageLogFields> {
    return event === undefined ? { streamId } : messageLogFields({ topic: this.topic, group: this.group, consumer: this.consumer, streamId, event })
  }

  async #moveToDeadLetter(id: string, fields: readonly string[] | null, reason: string, attempts: number, event?: Event): Promise<void> {
    try {
      const [dlqId] = await this.#ctx.backend.deadLetter(
        this.topic,
        this.group,
        [{ id, fields, error: reasonText(reason), attempts }],
        Date.now() - this.#ctx.config.dlqTtlMs,
      )
      if (dlqId !== undefined && dlqId !== '') this.#ctx.instruments.deadLettered.add(1, this.#attributes)
      this.#logger.warn({ ...this.#eventFields(id, event), dlqId, reason, attempts }, 'moved to the dead letter queue')
    } catch (error) {
      // Still pending: it is delivered again (and dead-lettered then) or claimed.
      this.#logger.error({ ...this.#eventFields(id, event), err: error }, 'dead-letter move failed; the entry stays pending')
      throw error
    }
  }

  // ---- settlement, called by DeliveredMessage ----

  /** @internal */
  settleAck(message: DeliveredMessage): Promise<'acked'> {
    this.#release(message)
    this.#ctx.instruments.acked.add(1, this.#attributes)
    return this.#ctx.acker.ack(this.topic, this.group, message.streamId)
  }

  /** @internal */
  async settleDeadLetter(message: DeliveredMessage, reason: unknown): Promise<void> {
    this.endProbation(message)
    try {
      await this.#moveToDeadLetter(message.streamId, message.fields, reasonText(reason), message.deliveryCount, message.event)
    } finally {
      this.#release(message)
    }
  }

  /** @internal Keeps the credit while waiting, then claims the entry back with a higher delivery count. */
  settleNack(message: DeliveredMessage, error: unknown, options: NackOptions | undefined): void {
    this.#ctx.instruments.nacked.add(1, this.#attributes)
    this.endProbation(message)
    if (this.#aborted()) {
      // Stopping: the entry stays pending, for a restart with this name or a claimer.
      this.#release(message)
      return
    }
    const delay = options?.delay ?? Math.min(this.#retry.initialDelay * 2 ** (message.deliveryCount - 1), 60_000)
    this.#logger.info({ ...this.#eventFields(message.streamId, message.event), err: error, retryInMs: delay }, 'nacked; will be delivered again')
    const timer = setTimeout(() => {
      this.#timers.delete(timer)
      void this.#redeliver(message)
    }, delay)
    this.#timers.add(timer)
  }

  async #redeliver(message: DeliveredMessage): Promise<void> {
    if (this.#aborted()) {
      this.#release(message)
      return
    }
    try {
      const [entry] = await this.#ctx.backend.redeliver(this.topic, this.group, this.consumer, [message.streamId])
      this.#release(message)
      if (entry !== undefined && !this.#aborted()) {
        this.#ctx.instruments.retried.add(1, this.#attributes)
        if (!this.#deliver(entry, 'read')) this.#logger.warn({ streamId: entry.id }, 'a nacked entry was deleted or trimmed; acked it as lost')
      }
    } catch (error) {
      // The entry is still ours in the pending list, and still held: try again later (a claim would also find it).
      this.#logger.warn({ ...this.#eventFields(message.streamId, message.event), err: error }, 'redelivery failed; will try again')
      const timer = setTimeout(() => {
        this.#timers.delete(timer)
        void this.#redeliver(message)
      }, 1_000)
      this.#timers.add(timer)
    }
  }

  /** @internal A message given back unsettled: it stays pending in the group; shutdown need not wait for it. */
  releaseUnsettled(message: DeliveredMessage): void {
    this.#release(message)
  }

  #release(message: DeliveredMessage): void {
    this.#dropProbation(message)
    if (this.#held.get(message.streamId) === message) this.#held.delete(message.streamId)
    this.#wake()
  }

  /** Credit or recovery room came free. */
  #wake(): void {
    // A claim scan waiting for credit goes first (it reserves synchronously), then the pull loop.
    if (this.#claimWanted && !this.#claiming && !this.#aborted()) {
      this.#claim().catch((error: unknown) => this.#logger.warn({ err: error }, 'claiming idle entries failed'))
    }
    const waiter = this.#creditWaiter
    if (waiter !== undefined) {
      this.#creditWaiter = undefined
      waiter()
    }
  }

  /** @internal */
  get maxDeliveries(): number {
    return this.#maxDeliveries
  }

  /** @internal True once stop() began. */
  get stopping(): boolean {
    return this.#signal.aborted
  }

  /** @internal The credit: at most this many unsettled messages (maxPendingMessages). */
  get maxPending(): number {
    return this.#maxPending
  }

  /** @internal */
  get retry(): RetryDefaults {
    return this.#retry
  }

  /** @internal */
  get consumerTimeoutMs(): number {
    return this.#consumerTimeoutMs
  }

  // ---- timers ----

  #expireTimedOut(): void {
    const now = Date.now()
    for (const message of this.#held.values()) {
      if (message.outcome === undefined && message.deadline <= now) {
        void message.nack(new ConsumerTimeoutError(message.streamId, this.#consumerTimeoutMs)).catch(() => undefined)
      }
    }
  }

  async #renewLeases(everyMs: number): Promise<void> {
    const now = Date.now()
    const ids: string[] = []
    for (const message of this.#held.values()) if (now - message.deliveredAt >= everyMs) ids.push(message.streamId)
    if (ids.length === 0) return
    const renewed = new Set(await this.#ctx.backend.renewLeases(this.topic, this.group, this.consumer, ids))
    for (const id of ids) {
      if (!renewed.has(id)) this.#logger.warn(this.#eventFields(id, this.#held.get(id)?.event), 'lease lost: another consumer claimed this message')
    }
  }

  async #claimTick(): Promise<void> {
    await this.#claim()
    await this.#removeStaleConsumers()
  }

  /**
   * Claims entries idle longer than claimMinIdleTime from any consumer of the
   * group (XAUTOCLAIM, following its cursor), within the credit. Out of credit,
   * the scan goes on as soon as a message is settled, before the pull loop
   * reads new entries: a busy consumer still takes over a dead one's work.
   */
  async #claim(): Promise<void> {
    if (this.#claiming || this.#claimIntervalMs <= 0) return
    if (this.#readPending) {
      // Own pending entries are re-read first; claiming goes on afterwards.
      this.#claimWanted = true
      return
    }
    // Claiming bumps delivery counts: a new scan (of entries of consumers that may have been killed by one of them) starts slow.
    if (this.#claimCursor === '0-0') this.#recoveryWindow = 1
    this.#claiming = true
    const lost = { count: 0 }
    try {
      let rounds = 0
      while (!this.#aborted()) {
        const count = Math.min(this.#batchSize, this.#credit(), this.#recoveryRoom())
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
      if (lost.count > 0) this.#logger.warn({ count: lost.count }, 'idle pending entries were deleted or trimmed; acked them as lost')
    }
  }

  /** One XAUTOCLAIM step of `count` entries; true when the scan is complete. */
  async #claimStep(count: number, lost: { count: number }): Promise<boolean> {
    this.#reserved += count
    let result
    try {
      result = await this.#ctx.backend.claimIdle(this.topic, this.group, this.consumer, { minIdleMs: this.#claimMinIdleMs, cursor: this.#claimCursor, count })
    } finally {
      this.#reserved -= count
    }
    this.#claimCursor = result.cursor
    if (result.deletedIds.length > 0) {
      this.#ctx.instruments.lost.add(result.deletedIds.length, this.#attributes)
      lost.count += result.deletedIds.length
      await this.#ctx.backend.ack(this.topic, this.group, result.deletedIds)
    }
    for (const entry of result.entries) {
      if (this.#aborted()) break
      if (!this.#deliver(entry, 'claim')) lost.count++
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

  /** Stops pulling, waits for in-flight messages up to the drain timeout, flushes acks, closes the connection. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop()
    return this.#stopping
  }

  async #stop(): Promise<void> {
    this.#signal.aborted = true
    this.#state = 'stopping'
    this.#signal.wake?.()
    this.#creditWaiter?.()
    for (const timer of this.#timers) if (timer !== this.#leaseTimer) clearInterval(timer)
    for (const timer of this.#probation.values()) clearTimeout(timer)
    this.#probation.clear()
    this.#releasePromoter?.()
    await this.#reader.close()
    const deadline = Date.now() + this.#drainTimeoutMs
    while (Date.now() < deadline && [...this.#held.values()].some((m) => m.outcome === undefined)) {
      await new Promise((r) => setTimeout(r, 10))
    }
    this.#drained = true
    clearInterval(this.#leaseTimer)
    this.#timers.clear()
    await this.#ctx.acker.flush()
    this.#held.clear()
    this.#state = 'stopped'
    this.#claimerAlive = false
    this.#ctx.onClosed(this)
  }
}

/** A delivered message; its settlement goes back to its subscription. */
export class DeliveredMessage<P = unknown> implements Message<P> {
  readonly event: Event<P>
  readonly streamId: string
  readonly deliveryCount: number
  readonly deliveredAt = Date.now()
  /** @internal */
  readonly fields: readonly string[] | null
  deadline: number
  #outcome: Outcome | undefined
  #result: Promise<Outcome> | undefined
  readonly #subscription: Subscription

  constructor(subscription: Subscription, entry: ReadEntry, event: Event) {
    this.#subscription = subscription
    this.streamId = entry.id
    this.fields = entry.fields
    this.deliveryCount = entry.deliveryCount
    this.event = event as Event<P>
    this.deadline = this.deliveredAt + subscription.consumerTimeoutMs
  }

  get topic(): string {
    return this.#subscription.topic
  }
  get group(): string {
    return this.#subscription.group
  }
  get consumer(): string {
    return this.#subscription.consumer
  }
  get maxDeliveries(): number {
    return this.#subscription.maxDeliveries
  }
  get retry(): RetryDefaults {
    return this.#subscription.retry
  }
  get outcome(): Outcome | undefined {
    return this.#outcome
  }

  /** The last call wins: the consumer timeout counts again from `untilMs` (Infinity holds it indefinitely). */
  holdUntil(untilMs: number): void {
    this.deadline = Math.max(this.deliveredAt, untilMs) + this.#subscription.consumerTimeoutMs
    // Parked by a window or join, which needs its other messages too: no longer on probation.
    if (untilMs === Number.POSITIVE_INFINITY) this.#subscription.endProbation(this)
  }

  /** Unsettled while its subscription stops: not to be started (it stays pending and comes back). */
  get [messageWithdrawn](): boolean {
    return this.#outcome === undefined && this.#subscription.stopping
  }

  /** Leaves the credit unsettled (see `releaseMessage`): still pending in the group, delivered again later. */
  [releaseMessage](): void {
    if (this.#outcome === undefined) this.#subscription.releaseUnsettled(this)
  }

  /** The subscription's credit: windows and joins close early before holding more than this. */
  get [creditLimit](): number {
    return this.#subscription.maxPending
  }

  withPayload<A>(payload: A): Message<A> {
    return new DecodedView<A>(this, payload)
  }

  ack(): Promise<Outcome> {
    if (this.#result) return this.#result
    this.#outcome = 'acked'
    this.#result = this.#subscription.settleAck(this)
    return this.#result
  }

  nack(error: unknown, options?: NackOptions): Promise<Outcome> {
    if (this.#result) return this.#result
    if (this.deliveryCount >= this.maxDeliveries) {
      const reason = `${reasonText(error)} (after ${this.deliveryCount} deliveries)`
      this.#outcome = 'dead-lettered'
      this.#result = this.#subscription.settleDeadLetter(this as DeliveredMessage, reason).then(() => 'dead-lettered' as const)
      return this.#result
    }
    this.#outcome = 'nacked'
    this.#subscription.settleNack(this, error, options)
    this.#result = Promise.resolve('nacked' as const)
    return this.#result
  }

  deadLetter(reason: unknown): Promise<Outcome> {
    if (this.#result) return this.#result
    this.#outcome = 'dead-lettered'
    this.#result = this.#subscription.settleDeadLetter(this as DeliveredMessage, reason).then(() => 'dead-lettered' as const)
    return this.#result
  }
}

/** A message with a decoded payload; settlement is the original's. */
class DecodedView<A> implements Message<A> {
  readonly event: Event<A>
  readonly #inner: Message

  constructor(inner: Message, payload: A) {
    this.#inner = inner
    const e = inner.event
    const event: { -readonly [K in keyof Event<A>]: Event<A>[K] } = { id: e.id, name: e.name, payload, headers: e.headers, timestamp: e.timestamp }
    if (e.correlationId !== undefined) event.correlationId = e.correlationId
    // The producer's trace context travels on, so that the process span can link to it.
    const traceparent = (e as { readonly traceparent?: string }).traceparent
    if (traceparent !== undefined) Object.assign(event, { traceparent })
    this.event = event
  }

  get streamId(): string {
    return this.#inner.streamId
  }
  get topic(): string {
    return this.#inner.topic
  }
  get group(): string {
    return this.#inner.group
  }
  get consumer(): string {
    return this.#inner.consumer
  }
  get deliveryCount(): number {
    return this.#inner.deliveryCount
  }
  get maxDeliveries(): number {
    return this.#inner.maxDeliveries
  }
  get retry(): RetryDefaults {
    return this.#inner.retry
  }
  get outcome(): Outcome | undefined {
    return this.#inner.outcome
  }
  holdUntil(untilMs: number): void {
    this.#inner.holdUntil(untilMs)
  }
  get [creditLimit](): number | undefined {
    return creditLimitOf(this.#inner)
  }
  [releaseMessage](): void {
    releaseUnhandled(this.#inner)
  }
  get [messageWithdrawn](): boolean {
    return isWithdrawn(this.#inner)
  }
  withPayload<B>(payload: B): Message<B> {
    return this.#inner.withPayload(payload)
  }
  ack(): Promise<Outcome> {
    return this.#inner.ack()
  }
  nack(error: unknown, options?: NackOptions): Promise<Outcome> {
    return this.#inner.nack(error, options)
  }
  deadLetter(reason: unknown): Promise<Outcome> {
    return this.#inner.deadLetter(reason)
  }
}
