import { BackendError, ClosedError, GroupMissingError } from '../../errors.js'
import {
  capUtf8,
  DlqFields,
  MAX_DLQ_STACK_BYTES,
  type ClaimResult,
  type ConsumerInfo,
  type DeadLetterInput,
  type GiveBackItem,
  type GroupInfo,
  type GroupReader,
  type IdentifiedEntry,
  type PromoteResult,
  type ReadEntry,
  type ReadRequest,
  type ScheduledEntry,
  type ScheduleInput,
  type StartFrom,
  type OperatorStateWrite,
  type StoredEntry,
  type StreamBackend,
  type TopicInfo,
} from '../types.js'
import { DelayedQueue } from './delayed-queue.js'
import { EntryLog, type LogEntry } from './entry-log.js'
import { compareIds, formatId, parseId, ZERO_ID, type StreamId } from './stream-id.js'

/** Options of {@link MemoryBackend}. */
export interface MemoryBackendOptions {
  /** The clock (ms) for stream ids, idle times and dead letter times; `Date.now` by default. Blocking reads always wait in real time. */
  readonly now?: () => number
}

/** A consumer of a group: its name, when it last interacted, and the ids it owns. */
interface ConsumerState {
  readonly name: string
  seenAt: number
  readonly pending: Set<string>
}

/** One entry of a group's pending entries list (PEL). */
interface PendingEntry {
  readonly key: string
  readonly id: StreamId
  consumer: ConsumerState
  deliveryCount: number
  deliveredAt: number
}

/**
 * A consumer group. Its PEL map is in id order: ids only enter it through `>`
 * reads, which deliver ids above every id delivered before.
 */
interface GroupState {
  lastDelivered: StreamId
  readonly pel: Map<string, PendingEntry>
  readonly consumers: Map<string, ConsumerState>
}

/** A topic stream with its consumer groups (deleting the stream deletes them, as DEL does). */
interface TopicStream {
  readonly log: EntryLog
  readonly groups: Map<string, GroupState>
}

/** What a reader needs from its backend. */
interface ReaderHost {
  read(topic: string, group: string, consumer: string, request: ReadRequest): ReadEntry[]
  subscribe(topic: string, wake: () => void): () => void
  released(reader: MemoryGroupReader): void
}

/** The longest delay `setTimeout` accepts. */
const MAX_TIMER_MS = 2_147_483_647

const toReadEntry = (entry: LogEntry, deliveryCount: number): ReadEntry => ({ id: entry.id, fields: [...entry.fields], deliveryCount })
const toStoredEntry = (entry: LogEntry): StoredEntry => ({ id: entry.id, fields: [...entry.fields] })
const isDlqField = (name: string): boolean => name.startsWith('dlq_') || name === 'replay_group'

function checkMaxLen(maxLen: number | undefined): void {
  if (maxLen !== undefined && !(Number.isSafeInteger(maxLen) && maxLen >= 0)) throw new BackendError('The MAXLEN argument must be a non-negative integer')
}

function checkFields(fields: readonly string[]): void {
  if (fields.length === 0 || fields.length % 2 !== 0) throw new BackendError('wrong number of arguments for XADD: fields must be name/value pairs')
}

/** `${ms}-0` as a MINID bound; an invalid time is refused as Redis refuses the id. */
const minIdOf = (ms: number): StreamId => parseId(`${Math.floor(ms)}-0`)

/**
 * The in-memory adapter of {@link StreamBackend}: a twin of the Redis adapter
 * with Redis Streams semantics (stream ids, consumer groups, pending entries
 * lists with delivery counts, XCLAIM/XAUTOCLAIM, dead letter and delayed
 * queues), held in the process. Every operation is atomic (it runs in one turn
 * of the event loop); blocking reads are woken by appends, not by polling.
 *
 * Beyond the port it offers test helpers that play a Redis operator's part:
 * {@link MemoryBackend.deleteTopic} (DEL), {@link MemoryBackend.destroyGroup}
 * (XGROUP DESTROY), {@link MemoryBackend.deleteEntries} (XDEL) and
 * {@link MemoryBackend.trim} (XTRIM).
 *
 * @example
 * ```ts
 * import { createEventManager } from 'rx-redis-streams'
 * const events = createEventManager({ backend: 'memory' }) // embedded, no Redis
 *
 * // or the port directly, e.g. in a test, with a controllable clock:
 * let now = 1_000
 * const backend = new MemoryBackend({ now: () => now })
 * await backend.ensureGroup('orders', 'billing', 'beginning')
 * await backend.append('orders', [['id', 'e1', 'name', 'order.placed']]) // ['1000-0']
 * ```
 */
export class MemoryBackend implements StreamBackend {
  readonly kind = 'memory'
  readonly #clock: () => number
  readonly #streams = new Map<string, TopicStream>()
  readonly #dlqs = new Map<string, EntryLog>()
  readonly #delayed = new Map<string, DelayedQueue>()
  readonly #topics = new Set<string>()
  /** The retry-safe append's memory: `topic\0eventId` -> stream id and expiry (ms). */
  readonly #published = new Map<string, { readonly id: string; readonly expiresAt: number }>()
  /** `topic\0group` -> pending entries found without their bodies (as Redis' `event:lost:{topic}`). */
  readonly #lost = new Map<string, number>()
  readonly #waiters = new Map<string, Set<() => void>>()
  readonly #readers = new Set<MemoryGroupReader>()
  readonly #host: ReaderHost
  #closed = false

  /** Creates an empty store; `options.now` replaces `Date.now` as its clock. */
  constructor(options: MemoryBackendOptions = {}) {
    this.#clock = options.now ?? Date.now
    this.#host = {
      read: (topic, group, consumer, request) => {
        this.#assertOpen()
        return request.from === 'pending'
          ? this.#readPending(topic, group, consumer, request.count, request.after ?? '0')
          : this.#readNew(topic, group, consumer, request.count)
      },
      subscribe: (topic, wake) => this.#subscribe(topic, wake),
      released: (reader) => this.#readers.delete(reader),
    }
  }

  // ---- plumbing ------------------------------------------------------------

  #now(): number {
    return Math.floor(this.#clock())
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError('memory backend')
  }

  /** Runs one atomic operation: a rejection (never a synchronous throw) on error or after close. */
  #run<T>(operation: () => T): Promise<T> {
    try {
      this.#assertOpen()
      return Promise.resolve(operation())
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new BackendError(String(error)))
    }
  }

  #subscribe(topic: string, wake: () => void): () => void {
    let set = this.#waiters.get(topic)
    if (set === undefined) {
      set = new Set()
      this.#waiters.set(topic, set)
    }
    set.add(wake)
    return () => {
      const current = this.#waiters.get(topic)
      if (current === undefined) return
      current.delete(wake)
      if (current.size === 0) this.#waiters.delete(topic)
    }
  }

  /** Wakes the reads blocked on a topic, oldest first (as Redis serves blocked clients). */
  #notify(topic: string): void {
    const set = this.#waiters.get(topic)
    if (set === undefined) return
    for (const wake of [...set]) wake()
  }

  #streamOrCreate(topic: string): TopicStream {
    let stream = this.#streams.get(topic)
    if (stream === undefined) {
      stream = { log: new EntryLog(), groups: new Map() }
      this.#streams.set(topic, stream)
    }
    return stream
  }

  /** The stream and group, or GroupMissingError (NOGROUP) when either is missing. */
  #group(topic: string, group: string): { stream: TopicStream; state: GroupState } {
    const stream = this.#streams.get(topic)
    const state = stream?.groups.get(group)
    if (stream === undefined || state === undefined) throw new GroupMissingError(topic, group)
    return { stream, state }
  }

  /** Looks a consumer up, creating it if needed, and marks it seen now. */
  #touchConsumer(group: GroupState, name: string, now: number): ConsumerState {
    let consumer = group.consumers.get(name)
    if (consumer === undefined) {
      consumer = { name, seenAt: now, pending: new Set() }
      group.consumers.set(name, consumer)
    }
    consumer.seenAt = now
    return consumer
  }

  #removePending(group: GroupState, key: string): boolean {
    const pending = group.pel.get(key)
    if (pending === undefined) return false
    group.pel.delete(key)
    pending.consumer.pending.delete(key)
    return true
  }

  /** Moves a pending entry to `consumer`, resetting its idle time (and counting a delivery unless `justId`). */
  #claim(pending: PendingEntry, consumer: ConsumerState, now: number, justId: boolean): void {
    if (pending.consumer !== consumer) {
      pending.consumer.pending.delete(pending.key)
      consumer.pending.add(pending.key)
      pending.consumer = consumer
    }
    pending.deliveredAt = now
    if (!justId) pending.deliveryCount++
  }

  /** XADD of several entries with optional exact MAXLEN; wakes blocked readers. */
  #appendToStream(topic: string, entries: readonly (readonly string[])[], maxLen: number | undefined): string[] {
    const stream = this.#streamOrCreate(topic)
    const now = this.#now()
    const ids = entries.map((fields) => stream.log.add(fields, now).id)
    if (maxLen !== undefined) stream.log.trimToLength(maxLen)
    this.#notify(topic)
    return ids
  }

  /** XREADGROUP `>`: entries after the group's last delivered id, added to the PEL with delivery count 1. */
  #readNew(topic: string, groupName: string, consumerName: string, count: number): ReadEntry[] {
    const { stream, state } = this.#group(topic, groupName)
    const now = this.#now()
    const consumer = this.#touchConsumer(state, consumerName, now)
    const entries = stream.log.after(state.lastDelivered, count)
    const last = entries[entries.length - 1]
    if (last !== undefined) state.lastDelivered = { ms: last.ms, seq: last.seq }
    return entries.map((entry) => {
      state.pel.set(entry.id, { key: entry.id, id: { ms: entry.ms, seq: entry.seq }, consumer, deliveryCount: 1, deliveredAt: now })
      consumer.pending.add(entry.id)
      return toReadEntry(entry, 1)
    })
  }

  #countLost(topic: string, group: string, count: number): void {
    if (count <= 0) return
    const key = `${topic}\0${group}`
    this.#lost.set(key, (this.#lost.get(key) ?? 0) + count)
  }

  /** XREADGROUP with an id: the consumer's own pending entries after `after`; a delivery each (deleted bodies come back as null, uncounted). */
  #readPending(topic: string, groupName: string, consumerName: string, count: number, after: string): ReadEntry[] {
    const afterId = parseId(after)
    const { stream, state } = this.#group(topic, groupName)
    const now = this.#now()
    const consumer = this.#touchConsumer(state, consumerName, now)
    const out: ReadEntry[] = []
    if (consumer.pending.size === 0) return out
    for (const pending of state.pel.values()) {
      if (count > 0 && out.length >= count) break
      if (pending.consumer !== consumer || compareIds(pending.id, afterId) <= 0) continue
      const entry = stream.log.get(pending.id)
      if (entry === undefined) {
        out.push({ id: pending.key, fields: null, deliveryCount: pending.deliveryCount })
        this.#countLost(topic, groupName, 1)
      } else {
        pending.deliveredAt = now
        pending.deliveryCount++
        out.push(toReadEntry(entry, pending.deliveryCount))
      }
    }
    return out
  }

  // ---- the port -------------------------------------------------------------

  /** Appends entries to a topic stream atomically (all or none) and returns their ids; `maxLen` trims exactly. */
  append(topic: string, entries: readonly (readonly string[])[], options: { readonly maxLen?: number } = {}): Promise<string[]> {
    return this.#run(() => {
      checkMaxLen(options.maxLen)
      entries.forEach(checkFields)
      this.#topics.add(topic)
      if (entries.length === 0) return []
      return this.#appendToStream(topic, entries, options.maxLen)
    })
  }

  /** Appends each entry unless its event id was appended within `windowMs` (then its first stream id comes back); atomic. */
  appendOnce(topic: string, entries: readonly IdentifiedEntry[], options: { readonly windowMs: number; readonly maxLen?: number }): Promise<string[]> {
    return this.#run(() => {
      checkMaxLen(options.maxLen)
      for (const entry of entries) checkFields(entry.fields)
      this.#topics.add(topic)
      const now = this.#now()
      // Insertion order is expiry order (for one window), so expired ids sit at the front.
      for (const [key, seen] of this.#published) {
        if (seen.expiresAt > now) break
        this.#published.delete(key)
      }
      const ids: string[] = []
      for (const entry of entries) {
        const key = `${topic}\0${entry.eventId}`
        const seen = this.#published.get(key)
        if (seen !== undefined) {
          ids.push(seen.id)
          continue
        }
        const [id] = this.#appendToStream(topic, [entry.fields], options.maxLen) as [string]
        this.#published.set(key, { id, expiresAt: now + Math.max(1, Math.ceil(options.windowMs)) })
        ids.push(id)
      }
      return ids
    })
  }

  /** Creates the group at the start (`0`) or end (`$`) of the stream, creating the stream too; an existing group is left alone. */
  ensureGroup(topic: string, group: string, startFrom: StartFrom): Promise<void> {
    return this.#run(() => {
      const stream = this.#streamOrCreate(topic)
      if (!stream.groups.has(group)) {
        stream.groups.set(group, { lastDelivered: startFrom === 'beginning' ? ZERO_ID : stream.log.lastId, pel: new Map(), consumers: new Map() })
      }
      this.#topics.add(topic)
    })
  }

  /** A reader whose blocking reads wait for appends to the topic; closing it wakes them with no entries. */
  createReader(): GroupReader {
    const reader = new MemoryGroupReader(this.#host)
    if (!this.#closed) this.#readers.add(reader)
    return reader
  }

  /** Removes ids from the group's PEL (XACK); returns how many were pending. A missing group acks nothing. */
  ack(topic: string, group: string, ids: readonly string[]): Promise<number> {
    return this.#run(() => {
      const keys = ids.map((id) => formatId(parseId(id)))
      const state = this.#streams.get(topic)?.groups.get(group)
      if (state === undefined) return 0
      let removed = 0
      for (const key of keys) if (this.#removePending(state, key)) removed++
      return removed
    })
  }

  /** Moves each still-pending letter to the topic's DLQ (its fields copied from the stream by id) with its `dlq_*` fields and acks it ('' for the others); then trims the DLQ below `trimBeforeMs`. */
  deadLetter(topic: string, group: string, letters: readonly DeadLetterInput[], trimBeforeMs: number): Promise<string[]> {
    return this.#run(() => {
      if (letters.length === 0) return []
      const keys = letters.map((letter) => formatId(parseId(letter.id)))
      const trimBelow = trimBeforeMs > 0 ? minIdOf(trimBeforeMs) : undefined
      const state = this.#streams.get(topic)?.groups.get(group)
      const now = this.#now()
      const failedAt = String(now)
      const out = letters.map((letter, i) => {
        if (state === undefined || !this.#removePending(state, keys[i] as string)) return ''
        const fields: string[] = []
        const original = this.#streams.get(topic)?.log.get(parseId(letter.id))?.fields ?? []
        for (let f = 0; f < original.length; f += 2) {
          const name = original[f] as string
          if (!isDlqField(name)) fields.push(name, original[f + 1] ?? '')
        }
        fields.push(
          DlqFields.originalId, letter.id,
          DlqFields.group, group,
          DlqFields.error, letter.error,
          DlqFields.attempts, String(letter.attempts),
          DlqFields.deliveries, String(letter.attempts),
        )
        if (letter.handlerRuns !== undefined) fields.push(DlqFields.handlerRuns, String(letter.handlerRuns))
        if (letter.errorClass !== undefined && letter.errorClass !== '') fields.push(DlqFields.errorClass, letter.errorClass)
        if (letter.stack !== undefined && letter.stack !== '') fields.push(DlqFields.stack, capUtf8(letter.stack, MAX_DLQ_STACK_BYTES))
        if (letter.consumer !== undefined && letter.consumer !== '') fields.push(DlqFields.consumer, letter.consumer)
        fields.push(DlqFields.failedAt, failedAt)
        let dlq = this.#dlqs.get(topic)
        if (dlq === undefined) {
          dlq = new EntryLog()
          this.#dlqs.set(topic, dlq)
        }
        return dlq.add(fields, now).id
      })
      if (trimBelow !== undefined) this.#dlqs.get(topic)?.trimBefore(trimBelow)
      return out
    })
  }

  /** XCLAIM with min idle 0: pending ids (any owner) move to `consumer` with one more delivery; ids whose entry is gone leave the PEL and the reply. */
  redeliver(topic: string, group: string, consumer: string, ids: readonly string[]): Promise<ReadEntry[]> {
    return this.#run(() => {
      if (ids.length === 0) return []
      const parsed = ids.map((id) => parseId(id))
      const { stream, state } = this.#group(topic, group)
      const now = this.#now()
      let claimer: ConsumerState | undefined
      const out: ReadEntry[] = []
      for (const id of parsed) {
        const key = formatId(id)
        const entry = stream.log.get(id)
        if (entry === undefined) {
          this.#removePending(state, key)
          continue
        }
        const pending = state.pel.get(key)
        // Owner-checked: a message another consumer claimed meanwhile is being handled there.
        if (pending === undefined || pending.consumer.name !== consumer) continue
        claimer ??= this.#touchConsumer(state, consumer, now)
        this.#claim(pending, claimer, now, false)
        out.push(toReadEntry(entry, pending.deliveryCount))
      }
      return out
    })
  }

  /** Resets the idle time of the ids `consumer` still owns (XCLAIM JUSTID: delivery counts unchanged); returns them. Owned ids whose entry is gone leave the PEL. */
  giveBack(topic: string, group: string, consumer: string, items: readonly GiveBackItem[], idleMs: number): Promise<string[]> {
    return this.#run(() => {
      if (items.length === 0) return []
      const { stream, state } = this.#group(topic, group)
      const owner = state.consumers.get(consumer)
      if (owner === undefined) return []
      const now = this.#now()
      const given: string[] = []
      for (const item of items) {
        const id = parseId(item.id)
        const key = formatId(id)
        const pending = state.pel.get(key)
        if (pending?.consumer !== owner) continue
        if (stream.log.get(id) === undefined) {
          this.#removePending(state, key)
          continue
        }
        // As XCLAIM … IDLE <idleMs> RETRYCOUNT <n> JUSTID.
        pending.deliveredAt = now - Math.max(0, Math.floor(idleMs))
        pending.deliveryCount = Math.max(0, Math.floor(item.retryCount))
        given.push(key)
      }
      return given
    })
  }

  renewLeases(topic: string, group: string, consumer: string, ids: readonly string[]): Promise<string[]> {
    return this.#run(() => {
      if (ids.length === 0) return []
      const parsed = ids.map((id) => parseId(id))
      const { stream, state } = this.#group(topic, group)
      const owner = state.consumers.get(consumer)
      if (owner === undefined) return []
      const now = this.#now()
      const renewed: string[] = []
      let touched = false
      for (const id of parsed) {
        const key = formatId(id)
        const pending = state.pel.get(key)
        if (pending?.consumer !== owner) continue
        if (stream.log.get(id) === undefined) {
          this.#removePending(state, key)
          continue
        }
        if (!touched) {
          owner.seenAt = now
          touched = true
        }
        this.#claim(pending, owner, now, true)
        renewed.push(key)
      }
      return renewed
    })
  }

  /** One XAUTOCLAIM step: from `cursor` (inclusive) claims up to `count` entries idle at least `minIdleMs`, dropping (and reporting) pending ids whose entry is gone. */
  claimIdle(
    topic: string,
    group: string,
    consumer: string,
    options: { readonly minIdleMs: number; readonly cursor: string; readonly count: number },
  ): Promise<ClaimResult> {
    return this.#run(() => {
      const start = parseId(options.cursor)
      if (!(options.count >= 1)) throw new BackendError('COUNT must be > 0')
      const { stream, state } = this.#group(topic, group)
      const now = this.#now()
      const minIdle = Math.max(0, Math.floor(options.minIdleMs))
      const scan = [...state.pel.values()]
      let i = 0
      while (i < scan.length && compareIds((scan[i] as PendingEntry).id, start) < 0) i++
      let attempts = Math.floor(options.count) * 10
      let remaining = Math.floor(options.count)
      let claimer: ConsumerState | undefined
      const entries: ReadEntry[] = []
      const deletedIds: string[] = []
      while (attempts > 0 && remaining > 0 && i < scan.length) {
        attempts--
        const pending = scan[i++] as PendingEntry
        const entry = stream.log.get(pending.id)
        if (entry === undefined) {
          this.#removePending(state, pending.key)
          deletedIds.push(pending.key)
          remaining--
          continue
        }
        if (minIdle > 0 && now - pending.deliveredAt < minIdle) continue
        claimer ??= this.#touchConsumer(state, consumer, now)
        this.#claim(pending, claimer, now, false)
        entries.push(toReadEntry(entry, pending.deliveryCount))
        remaining--
      }
      const next = scan[i]
      this.#countLost(topic, group, deletedIds.length)
      return { cursor: next === undefined ? '0-0' : next.key, entries, deletedIds }
    })
  }

  /** The consumers of a group by name, with their pending counts and idle times (XINFO CONSUMERS). */
  consumers(topic: string, group: string): Promise<ConsumerInfo[]> {
    return this.#run(() => {
      const { state } = this.#group(topic, group)
      const now = this.#now()
      return [...state.consumers.values()]
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
        .map((c) => ({ name: c.name, pending: c.pending.size, idleMs: Math.max(0, now - c.seenAt) }))
    })
  }

  /** Deletes a consumer only when it owns no pending entry; false when it has some or does not exist (or the group is missing). */
  deleteIdleConsumer(topic: string, group: string, consumer: string): Promise<boolean> {
    return this.#run(() => {
      const state = this.#streams.get(topic)?.groups.get(group)
      const found = state?.consumers.get(consumer)
      if (state === undefined || found === undefined || found.pending.size > 0) return false
      state.consumers.delete(consumer)
      return true
    })
  }

  /** Stores delayed events by event id (an existing id is replaced), ordered by due time then event id. */
  schedule(topic: string, items: readonly ScheduleInput[]): Promise<void> {
    return this.#run(() => {
      if (items.length === 0) return
      for (const item of items) if (Number.isNaN(item.dueAt)) throw new BackendError('delayed due time is not a number')
      let queue = this.#delayed.get(topic)
      if (queue === undefined) {
        queue = new DelayedQueue()
        this.#delayed.set(topic, queue)
      }
      for (const item of items) queue.put(item.eventId, item.dueAt, item.fields)
      this.#topics.add(topic)
    })
  }

  /** Removes a delayed event; true if it was waiting. */
  cancelScheduled(topic: string, eventId: string): Promise<boolean> {
    return this.#run(() => this.#delayed.get(topic)?.remove(eventId) ?? false)
  }

  /** Moves up to `limit` events due at `now` to the topic stream, earliest first, and reports the next due time. */
  promoteDue(topic: string, now: number, limit: number, options: { readonly maxLen?: number } = {}): Promise<PromoteResult> {
    return this.#run(() => {
      checkMaxLen(options.maxLen)
      const queue = this.#delayed.get(topic)
      if (queue === undefined) return { promoted: 0, nextDueAt: null }
      const due = queue.takeDue(Math.floor(now), limit)
      if (due.length > 0) this.#appendToStream(topic, due.map((item) => item.fields), options.maxLen)
      return { promoted: due.length, nextDueAt: queue.first()?.dueAt ?? null }
    })
  }

  /** Delayed events, earliest first, from rank `offset` (default 0). */
  listScheduled(topic: string, options: { readonly offset?: number; readonly count: number }): Promise<ScheduledEntry[]> {
    return this.#run(() => {
      const queue = this.#delayed.get(topic)
      if (queue === undefined || options.count <= 0) return []
      const start = options.offset ?? 0
      return queue.range(start, start + options.count - 1).map((item) => ({ eventId: item.eventId, dueAt: item.dueAt, fields: [...item.fields] }))
    })
  }

  /** Number of delayed events waiting. */
  countScheduled(topic: string): Promise<number> {
    return this.#run(() => this.#delayed.get(topic)?.size ?? 0)
  }

  /** Up to `count` dead letters in id order, after `after` (exclusive). */
  dlqList(topic: string, options: { readonly count: number; readonly after?: string }): Promise<StoredEntry[]> {
    return this.#run(() => {
      const after = options.after === undefined ? undefined : parseId(options.after)
      const dlq = this.#dlqs.get(topic)
      if (dlq === undefined || options.count <= 0) return []
      return dlq.after(after ?? ZERO_ID, options.count).map(toStoredEntry)
    })
  }

  /** One dead letter by id, or null. */
  dlqGet(topic: string, dlqId: string): Promise<StoredEntry | null> {
    return this.#run(() => {
      const entry = this.#findDeadLetter(topic, dlqId)
      return entry === undefined ? null : toStoredEntry(entry)
    })
  }

  /** XRANGE id id: an id without a sequence matches its first entry of that millisecond. */
  #findDeadLetter(topic: string, dlqId: string): LogEntry | undefined {
    const start = parseId(dlqId, 'min')
    const end = parseId(dlqId, 'max')
    return this.#dlqs.get(topic)?.range(start, end, 1)[0]
  }

  /** Number of dead letters of a topic. */
  dlqCount(topic: string): Promise<number> {
    return this.#run(() => this.#dlqs.get(topic)?.length ?? 0)
  }

  /** Appends a dead letter's original fields back to the topic with `replay_group` = its `dlq_group`, and deletes it from the DLQ; null if not found. */
  dlqReplay(topic: string, dlqId: string, options: { readonly maxLen?: number } = {}): Promise<string | null> {
    return this.#run(() => {
      checkMaxLen(options.maxLen)
      const found = this.#findDeadLetter(topic, dlqId)
      if (found === undefined) return null
      const fields: string[] = []
      let group: string | undefined
      for (let f = 0; f < found.fields.length; f += 2) {
        const name = found.fields[f] as string
        const value = found.fields[f + 1] ?? ''
        if (name === DlqFields.group) group = value
        if (!isDlqField(name)) fields.push(name, value)
      }
      if (group !== undefined) fields.push('replay_group', group)
      checkFields(fields)
      const [id] = this.#appendToStream(topic, [fields], options.maxLen)
      this.#dlqs.get(topic)?.delete(found)
      return id ?? null
    })
  }

  /** Deletes dead letters by id; returns how many existed. */
  dlqRemove(topic: string, dlqIds: readonly string[]): Promise<number> {
    return this.#run(() => {
      const parsed = dlqIds.map((id) => parseId(id))
      const dlq = this.#dlqs.get(topic)
      if (dlq === undefined) return 0
      let removed = 0
      for (const id of parsed) if (dlq.delete(id)) removed++
      return removed
    })
  }

  /** Deletes a topic's whole DLQ; returns how many dead letters it held. */
  dlqPurge(topic: string): Promise<number> {
    return this.#run(() => {
      const count = this.#dlqs.get(topic)?.length ?? 0
      this.#dlqs.delete(topic)
      return count
    })
  }

  /** Deletes dead letters whose id time is below `minTimeMs` (XTRIM MINID); returns how many. */
  dlqTrim(topic: string, minTimeMs: number): Promise<number> {
    return this.#run(() => {
      const minId = minIdOf(minTimeMs)
      return this.#dlqs.get(topic)?.trimBefore(minId) ?? 0
    })
  }

  /** Every topic appended to, scheduled on or given a group, sorted. */
  topics(): Promise<string[]> {
    return this.#run(() => [...this.#topics].sort())
  }

  /** Length and first/last entry ids of a topic stream (zero and nulls when it does not exist). */
  topicInfo(topic: string): Promise<TopicInfo> {
    return this.#run(() => {
      const log = this.#streams.get(topic)?.log
      return { length: log?.length ?? 0, firstId: log?.first()?.id ?? null, lastId: log?.last()?.id ?? null }
    })
  }

  /** The groups of a topic by name, with consumers, pending count, last delivered id and exact lag. */
  groups(topic: string): Promise<GroupInfo[]> {
    return this.#run(() => {
      const stream = this.#streams.get(topic)
      if (stream === undefined) return []
      return [...stream.groups.entries()]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([name, state]) => ({
          name,
          consumers: state.consumers.size,
          pending: state.pel.size,
          lastDeliveredId: formatId(state.lastDelivered),
          lag: stream.log.countAfter(state.lastDelivered),
          lost: this.#lost.get(`${topic}\0${name}`) ?? 0,
        }))
    })
  }

  /** Always 0: there is no round trip. */
  ping(): Promise<number> {
    return this.#run(() => 0)
  }

  /** Closes every reader (waking blocked reads with no entries); later calls reject with ClosedError. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const readers = [...this.#readers]
    this.#readers.clear()
    await Promise.all(readers.map((reader) => reader.close()))
  }

  // ---- test helpers (what an operator could do to a Redis) -------------------

  /**
   * Test helper, like `DEL` of the topic stream: deletes the stream with its
   * groups and PELs (the DLQ, delayed events and topic registry stay). Blocked
   * reads on it wake and reject with GroupMissingError. True if it existed.
   */
  deleteTopic(topic: string): Promise<boolean> {
    return this.#run(() => {
      const existed = this.#streams.delete(topic)
      if (existed) this.#notify(topic)
      return existed
    })
  }

  /** Test helper, like `XGROUP DESTROY`: deletes a group with its PEL and consumers; blocked reads of it reject with GroupMissingError. True if it existed. */
  destroyGroup(topic: string, group: string): Promise<boolean> {
    return this.#run(() => {
      const existed = this.#streams.get(topic)?.groups.delete(group) ?? false
      if (existed) this.#notify(topic)
      return existed
    })
  }

  /** Test helper, like `XDEL`: deletes entries from a topic stream (PELs keep their ids); returns how many existed. */
  deleteEntries(topic: string, ids: readonly string[]): Promise<number> {
    return this.#run(() => {
      const parsed = ids.map((id) => parseId(id))
      const log = this.#streams.get(topic)?.log
      if (log === undefined) return 0
      let deleted = 0
      for (const id of parsed) if (log.delete(id)) deleted++
      return deleted
    })
  }

  /** Test helper, like `XTRIM MAXLEN` (exact): keeps the newest `maxLen` entries of a topic stream; returns how many were removed. */
  trim(topic: string, maxLen: number): Promise<number> {
    return this.#run(() => {
      checkMaxLen(maxLen)
      return this.#streams.get(topic)?.log.trimToLength(maxLen) ?? 0
    })
  }

  /** Window and join state hashes: `topic\0group\0operator\0part` -> fields and expiry (as Redis' `event:opstate:{topic}:…`). */
  readonly #operatorState = new Map<string, { readonly fields: Map<string, string>; expireAt: number }>()

  #stateHash(topic: string, group: string, operator: string, part: string): { readonly fields: Map<string, string>; expireAt: number } | undefined {
    const key = `${topic}\u0000${group}\u0000${operator}\u0000${part}`
    const hash = this.#operatorState.get(key)
    if (hash !== undefined && hash.expireAt <= this.#clock()) {
      this.#operatorState.delete(key)
      return undefined
    }
    return hash
  }

  operatorStateRead(topic: string, group: string, operator: string, part: string, fields: readonly string[]): Promise<(string | null)[]> {
    return this.#run(() => {
      const hash = this.#stateHash(topic, group, operator, part)
      return fields.map((field) => hash?.fields.get(field) ?? null)
    })
  }

  operatorStateWrite(topic: string, group: string, operator: string, part: string, write: OperatorStateWrite): Promise<(string | null)[]> {
    return this.#run(() => {
      const key = `${topic}\u0000${group}\u0000${operator}\u0000${part}`
      const hash = this.#stateHash(topic, group, operator, part) ?? { fields: new Map<string, string>(), expireAt: write.expireAt }
      const previous = write.set.map(([field, value]) => {
        const before = hash.fields.get(field) ?? null
        hash.fields.set(field, value)
        return before
      })
      for (const [field, value] of write.max ?? []) {
        const current = Number(hash.fields.get(field))
        if (!(hash.fields.has(field) && current >= value)) hash.fields.set(field, String(value))
      }
      for (const field of write.delete ?? []) hash.fields.delete(field)
      hash.expireAt = Math.max(hash.expireAt, write.expireAt)
      if (hash.fields.size === 0) this.#operatorState.delete(key)
      else this.#operatorState.set(key, hash)
      return previous
    })
  }
}

/** A reader of the memory backend: blocking reads wait on the topic's wake-ups, a timer, or close. */
class MemoryGroupReader implements GroupReader {
  readonly #host: ReaderHost
  /** Ends each blocked read of this reader with no entries. */
  readonly #blocked = new Set<() => void>()
  #closed = false

  constructor(host: ReaderHost) {
    this.#host = host
  }

  read(topic: string, group: string, consumer: string, request: ReadRequest): Promise<ReadEntry[]> {
    if (this.#closed) return Promise.resolve([])
    let first: ReadEntry[]
    try {
      first = this.#host.read(topic, group, consumer, request)
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new BackendError(String(error)))
    }
    if (first.length > 0 || request.from === 'pending' || !(request.blockMs > 0)) return Promise.resolve(first)
    return new Promise<ReadEntry[]>((resolve, reject) => {
      let settled = false
      const finish = (): boolean => {
        if (settled) return false
        settled = true
        clearTimeout(timer)
        unsubscribe()
        this.#blocked.delete(stop)
        return true
      }
      const stop = (): void => {
        if (finish()) resolve([])
      }
      const wake = (): void => {
        if (settled) return
        try {
          const entries = this.#host.read(topic, group, consumer, request)
          if (entries.length > 0 && finish()) resolve(entries)
        } catch (error) {
          if (finish()) reject(error instanceof Error ? error : new BackendError(String(error)))
        }
      }
      const unsubscribe = this.#host.subscribe(topic, wake)
      const timer = setTimeout(stop, Math.min(request.blockMs, MAX_TIMER_MS))
      this.#blocked.add(stop)
    })
  }

  /** Read-ahead: the first read may block, the others follow at once (as a pipeline of XREADGROUP does). */
  async readMany(topic: string, group: string, consumer: string, counts: readonly number[], blockMs: number): Promise<ReadEntry[][]> {
    const out: ReadEntry[][] = []
    for (let i = 0; i < counts.length; i++) {
      const count = counts[i] as number
      if (i === 0) {
        out.push(await this.read(topic, group, consumer, { count, blockMs, from: 'new' }))
        continue
      }
      if (this.#closed) {
        out.push([])
        continue
      }
      try {
        out.push(this.#host.read(topic, group, consumer, { count, blockMs: 0, from: 'new' }))
      } catch (error) {
        throw error instanceof Error ? error : new BackendError(String(error))
      }
    }
    return out
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true
      for (const stop of [...this.#blocked]) stop()
      this.#host.released(this)
    }
    return Promise.resolve()
  }
}
