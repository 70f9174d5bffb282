/**
 * The storage port: the few verbs the engine needs from a stream store.
 * Adapters (Redis, memory) implement them with Redis Streams semantics and
 * decide nothing about policy: the engine says when to ack, retry, claim,
 * dead-letter or promote, the adapter only carries it out atomically.
 *
 * Field lists are flat `[field, value, field, value, ...]` string arrays, as
 * produced by `encodeEvent`.
 */

/** Where a new consumer group starts: the topic's retained history, or only new events. */
export type StartFrom = 'beginning' | 'latest'

/** One entry read from a stream. `fields` is null when the entry was deleted or trimmed while pending. */
export interface ReadEntry {
  readonly id: string
  readonly fields: readonly string[] | null
  /** How many times the group has delivered this entry (1 on the first delivery). */
  readonly deliveryCount: number
}

/** A stream entry (topic or dead letter stream) as stored. */
export interface StoredEntry {
  readonly id: string
  readonly fields: readonly string[]
}

/** What one read asks for. */
export interface ReadRequest {
  /** The most entries to return (the engine's credit). */
  readonly count: number
  /** How long to block for new entries; 0 = do not block. Ignored for `pending`. */
  readonly blockMs: number
  /** `new`: entries never delivered to the group (`>`); `pending`: this consumer's own pending entries after `after`. */
  readonly from: 'new' | 'pending'
  /** With `pending`: return entries with ids greater than this (default `0`). */
  readonly after?: string
}

/** A reader with a connection of its own, so that blocking reads never delay other commands. */
export interface GroupReader {
  read(topic: string, group: string, consumer: string, request: ReadRequest): Promise<ReadEntry[]>
  /**
   * Read-ahead: `counts.length` reads of new entries (`>`), the i-th asking for
   * at most `counts[i]`, sent together in one round trip (one pipeline on the
   * reader's connection). Only the first may block (`blockMs`, 0 = none).
   * Returns one array per read, in order, so the entries are in id order
   * across them. Fails as a whole (then nothing of it counts as delivered to
   * the caller, as for a failed `read`). Optional: without it the engine reads
   * one batch at a time with `read`. The engine sends a round with `blockMs`
   * 0 while it still delivers the one before (never more than one call of a
   * reader in flight): `close()` should let such a call return what it read
   * (the engine gives it back) rather than cut it.
   *
   * ## Example
   * ```ts
   * const [first, second] = (await reader.readMany?.('orders', 'billing', 'c1', [10, 10], 5_000)) ?? []
   * ```
   */
  readMany?(topic: string, group: string, consumer: string, counts: readonly number[], blockMs: number): Promise<ReadEntry[][]>
  /** Wakes a blocked read early (it returns no entries) and releases the connection. */
  close(): Promise<void>
}

/** An entry to append with the event id it carries (the key of the retry-safe append). */
export interface IdentifiedEntry {
  readonly eventId: string
  readonly fields: readonly string[]
}

/** One message to move to the dead letter queue. */
export interface DeadLetterInput {
  /** Its id in the topic stream. */
  readonly id: string
  /**
   * Its original fields as the engine read them (null if its body is gone; the
   * move still acks it). The adapters do not send them back: the move copies the
   * entry from the stream by id, so a large entry crosses the network once.
   */
  readonly fields: readonly string[] | null
  /** Why it failed (already capped in length by the engine). */
  readonly error: string
  /** How many deliveries it had (the group's delivery count). */
  readonly attempts: number
  /** How many times a handler ran it in this process (retries included); absent when unknown. */
  readonly handlerRuns?: number
  /** The class name of the last error (e.g. `TypeError`, `MalformedPayloadError`). */
  readonly errorClass?: string
  /** The last error's stack (capped at 4 KiB by the writer). */
  readonly stack?: string
  /** The consumer that dead-lettered it. */
  readonly consumer?: string
}

/** The most UTF-8 bytes of an error stack a dead letter keeps. */
export const MAX_DLQ_STACK_BYTES = 4_096

/** `text` cut to at most `maxBytes` UTF-8 bytes, never inside a character. */
export function capUtf8(text: string, maxBytes: number): string {
  if (text.length * 3 <= maxBytes || Buffer.byteLength(text, 'utf8') <= maxBytes) return text
  let end = Math.min(text.length, maxBytes)
  // A UTF-16 unit is at most 3 UTF-8 bytes: dropping ceil(excess / 3) units never drops too many.
  for (let excess = Buffer.byteLength(text.slice(0, end), 'utf8') - maxBytes; excess > 0; excess = Buffer.byteLength(text.slice(0, end), 'utf8') - maxBytes) {
    end -= Math.ceil(excess / 3)
  }
  // Do not split a surrogate pair.
  const last = text.charCodeAt(end - 1)
  if (end > 0 && last >= 0xd800 && last <= 0xdbff) end--
  return text.slice(0, end)
}

/** Dead-letter stream field names (README, "Redis layout"). */
export const DlqFields = {
  originalId: 'dlq_original_id',
  group: 'dlq_group',
  error: 'dlq_error',
  /** Deliveries (the group's delivery count). Written for old readers; `dlq_deliveries` is read first. */
  attempts: 'dlq_attempts',
  failedAt: 'dlq_failed_at',
  deliveries: 'dlq_deliveries',
  handlerRuns: 'dlq_handler_runs',
  errorClass: 'dlq_error_class',
  stack: 'dlq_stack',
  consumer: 'dlq_consumer',
  /** The original fields as one JSON array, for an entry too wide to copy field by field. */
  encodedFields: 'dlq_fields',
} as const

/** The result of one step of claiming idle entries (XAUTOCLAIM). */
export interface ClaimResult {
  /** Cursor for the next step; `0-0` when the scan is complete. */
  readonly cursor: string
  /** Claimed entries, now owned by the claimer, with their new delivery counts. */
  readonly entries: ReadEntry[]
  /** Ids that were pending but whose entries no longer exist (removed from the PEL by Redis 7). */
  readonly deletedIds: string[]
}

/** A consumer of a group. */
export interface ConsumerInfo {
  readonly name: string
  readonly pending: number
  /** Milliseconds since the consumer's last attempted interaction. */
  readonly idleMs: number
}

/** A consumer group of a topic. */
export interface GroupInfo {
  readonly name: string
  readonly consumers: number
  readonly pending: number
  readonly lastDeliveredId: string
  /** Entries not yet delivered to the group; null when the store cannot tell. */
  readonly lag: number | null
  /** Pending entries of the group whose bodies were trimmed or deleted before they were handled (kept in the store, all processes). */
  readonly lost?: number
}

/** A topic stream. */
export interface TopicInfo {
  readonly length: number
  readonly firstId: string | null
  readonly lastId: string | null
}

/** A delayed event waiting for its due time. */
export interface ScheduledEntry {
  readonly eventId: string
  readonly dueAt: number
  readonly fields: readonly string[]
}

/** One delayed event to schedule. */
export interface ScheduleInput {
  readonly eventId: string
  readonly dueAt: number
  readonly fields: readonly string[]
}

/** The result of one promotion step. */
export interface PromoteResult {
  readonly promoted: number
  /** Due time of the earliest entry still waiting, or null if none. */
  readonly nextDueAt: number | null
}

/**
 * The storage verbs of the engine. Every multi-step state change is atomic
 * (one Lua script on Redis).
 */
export interface StreamBackend {
  /** `redis` or `memory`. */
  readonly kind: string

  /** Appends entries to a topic atomically (all or none) and returns their ids; optional approximate MAXLEN retention. */
  append(topic: string, entries: readonly (readonly string[])[], options?: { readonly maxLen?: number }): Promise<string[]>
  /**
   * The retry-safe append: each entry is appended at most once per event id
   * within `windowMs` (one atomic step); a repeated event id resolves to the
   * stream id it was first appended under. Optional: adapters without it
   * cannot deduplicate, and the publisher falls back to `append`.
   */
  appendOnce?(topic: string, entries: readonly IdentifiedEntry[], options: { readonly windowMs: number; readonly maxLen?: number }): Promise<string[]>
  /** Appends one entry (the hot path of publishing: no batch arrays). Optional: `append` is used when absent. */
  appendOne?(topic: string, fields: readonly string[], options?: { readonly maxLen?: number }): Promise<string>
  /** Creates the group (and the stream) if needed; an existing group is left as it is. */
  ensureGroup(topic: string, group: string, startFrom: StartFrom): Promise<void>
  /** A reader with its own connection for blocking reads. */
  createReader(): GroupReader
  /** Acks many ids in one command; returns how many were pending. */
  ack(topic: string, group: string, ids: readonly string[]): Promise<number>
  /** Atomically appends each to the topic's DLQ (with `dlq_*` fields) and acks it; trims DLQ entries older than `minTimeMs`. Returns the DLQ ids. */
  deadLetter(topic: string, group: string, letters: readonly DeadLetterInput[], trimBeforeMs: number): Promise<string[]>
  /** Claims ids still owned by `consumer` again, incrementing their delivery counts (a redelivery after nack). Entries not pending, owned by another consumer, or deleted are left out. */
  redeliver(topic: string, group: string, consumer: string, ids: readonly string[]): Promise<ReadEntry[]>
  /** Resets the idle time of the ids still owned by `consumer` (others untouched); returns the ids renewed. */
  renewLeases(topic: string, group: string, consumer: string, ids: readonly string[]): Promise<string[]>
  /** One step of claiming entries idle longer than `minIdleMs` from any consumer of the group. */
  claimIdle(topic: string, group: string, consumer: string, options: { readonly minIdleMs: number; readonly cursor: string; readonly count: number }): Promise<ClaimResult>
  /** The consumers of a group. */
  consumers(topic: string, group: string): Promise<ConsumerInfo[]>
  /** Deletes a consumer only if it has no pending entries; true if deleted. */
  deleteIdleConsumer(topic: string, group: string, consumer: string): Promise<boolean>

  /** Stores delayed events (by event id) with their due times. */
  schedule(topic: string, items: readonly ScheduleInput[]): Promise<void>
  /** Removes a delayed event before it is due; true if it was waiting. */
  cancelScheduled(topic: string, eventId: string): Promise<boolean>
  /** Atomically moves up to `limit` events due at `now` to the topic stream. Safe with concurrent promoters. */
  promoteDue(topic: string, now: number, limit: number, options?: { readonly maxLen?: number }): Promise<PromoteResult>
  /** Delayed events, earliest first. */
  listScheduled(topic: string, options: { readonly offset?: number; readonly count: number }): Promise<ScheduledEntry[]>
  /** Number of delayed events waiting. */
  countScheduled(topic: string): Promise<number>

  /** Dead letters in id order, after `after` (exclusive). */
  dlqList(topic: string, options: { readonly count: number; readonly after?: string }): Promise<StoredEntry[]>
  dlqGet(topic: string, dlqId: string): Promise<StoredEntry | null>
  dlqCount(topic: string): Promise<number>
  /** Atomically appends the dead letter back to the topic, targeted at its group, and deletes it from the DLQ. Returns the new stream id, or null if not found. */
  dlqReplay(topic: string, dlqId: string, options?: { readonly maxLen?: number }): Promise<string | null>
  dlqRemove(topic: string, dlqIds: readonly string[]): Promise<number>
  /** Deletes the whole DLQ of a topic; returns how many entries it held. */
  dlqPurge(topic: string): Promise<number>
  /** Deletes dead letters older than `minTimeMs`; returns how many. */
  dlqTrim(topic: string, minTimeMs: number): Promise<number>

  /** Every topic ever appended to or scheduled on (a registry, never a key scan). */
  topics(): Promise<string[]>
  topicInfo(topic: string): Promise<TopicInfo>
  groups(topic: string): Promise<GroupInfo[]>
  /** Round trip time in ms. */
  ping(): Promise<number>
  /** Releases every connection. Idempotent. */
  close(): Promise<void>

  /**
   * Gives entries still owned by `consumer` back to the group: each one's idle
   * time becomes `idleMs` (so any consumer's next claim takes it at once) and
   * its delivery count becomes `retryCount` (Redis: `XCLAIM … IDLE <idleMs>
   * RETRYCOUNT <n> JUSTID`, owner-checked in one script). The engine passes
   * the count it saw minus one, so that the next delivery (which adds one)
   * carries the count again: a give-back costs no delivery. Entries owned by
   * another consumer, no longer pending, or deleted are left out. Returns the
   * ids given back. Optional: without it, entries stay pending until idle.
   */
  giveBack?(topic: string, group: string, consumer: string, items: readonly GiveBackItem[], idleMs: number): Promise<string[]>
  /**
   * Reads fields of one state hash of a window or join operator: the state of
   * operator `operator` of `group` on `topic`, part `part` (a time bucket or
   * `meta`). Null for absent fields. Optional: without it, operators keep
   * their state in memory only.
   */
  operatorStateRead?(topic: string, group: string, operator: string, part: string, fields: readonly string[]): Promise<(string | null)[]>
  /**
   * Changes one state hash of a window or join operator atomically (one
   * script): sets fields, raises numeric fields (watermarks), deletes fields,
   * and makes the hash expire at `expireAt` unless it already expires later.
   * Returns the previous values of the fields set.
   */
  operatorStateWrite?(topic: string, group: string, operator: string, part: string, write: OperatorStateWrite): Promise<(string | null)[]>
}

/** One entry to give back (see {@link StreamBackend.giveBack}). */
export interface GiveBackItem {
  readonly id: string
  /** The delivery count to store (≥ 0). */
  readonly retryCount: number
}

/** One change of an operator's state hash (see {@link StreamBackend.operatorStateWrite}). */
export interface OperatorStateWrite {
  /** Fields to set. */
  readonly set: readonly (readonly [field: string, value: string])[]
  /** Numeric fields to raise to the value when it is larger (or absent). */
  readonly max?: readonly (readonly [field: string, value: number])[]
  /** Fields to delete. */
  readonly delete?: readonly string[]
  /** Epoch ms when the hash expires (a later expiry already set is kept). */
  readonly expireAt: number
}
