import { DlqFields, type StoredEntry, type StreamBackend } from './backend/types.js'
import type { Config } from './config/types.js'
import { decodeEntry, type Event } from './event.js'
import { validateTopic } from './topic.js'

/** A message that failed for good, kept in its topic's dead letter stream. */
export interface DeadLetter {
  /** Its id in the dead letter stream (the original spec's `dlq_message_id`). */
  readonly dlqId: string
  readonly topic: string
  /** The original event; null when its fields could not be decoded (malformed input). */
  readonly event: Event | null
  /** The stored fields: the original entry's and the `dlq_*` ones (an entry stored as one `dlq_fields` field comes back expanded). */
  readonly fields: Readonly<Record<string, string>>
  /** Its id in the topic stream when it failed. */
  readonly originalId: string
  /** The consumer group that failed it. */
  readonly group: string
  /** Why it failed: the error's message, capped at 1,000 characters (its class is `errorClass`); a decode failure names its reason. */
  readonly error: string
  /** Deliveries it had (the group's delivery count when it was moved). Same as `attempts`. */
  readonly deliveries: number
  /** Deliveries it had: the name older letters used (`dlq_attempts`); equals `deliveries`. */
  readonly attempts: number
  /** How many times a handler ran it in the process that moved it (retries included; BullMQ's `attemptsMade`); null when not recorded. */
  readonly handlerRuns: number | null
  /** The class name of the last error (`TypeError`, `DecodeError`, …); null when not recorded. */
  readonly errorClass: string | null
  /** The last error's stack, at most 4 KiB (BullMQ's `stacktrace`); null when not recorded. */
  readonly stack: string | null
  /** The consumer that moved it; null when not recorded. */
  readonly consumer: string | null
  /** When it was moved, ms since the epoch. */
  readonly failedAt: number
}

/** The original fields of a letter stored as one JSON field, or null when it cannot be read. */
function expandEncoded(text: string): string[] | null {
  try {
    const parsed: unknown = JSON.parse(text)
    if (!Array.isArray(parsed) || !parsed.every((v) => typeof v === 'string')) return null
    return parsed
  } catch {
    return null
  }
}

const optionalNumber = (text: string | undefined): number | null => {
  if (text === undefined || text === '') return null
  const n = Number(text)
  return Number.isFinite(n) ? n : null
}

/** Options of {@link DeadLetterQueue.replayAll}. */
export interface ReplayAllOptions {
  /** Only dead letters of this group. */
  readonly group?: string
  /** Only dead letters for which this returns true. */
  readonly filter?: (letter: DeadLetter) => boolean
  /** Called after each page with the number replayed so far. */
  readonly onProgress?: (replayed: number) => void
}

function parse(topic: string, entry: StoredEntry, maxPayloadBytes: number, maxPayloadDepth: number): DeadLetter {
  const fields: Record<string, string> = Object.create(null) as Record<string, string>
  let original: string[] = []
  const dlq: Record<string, string> = Object.create(null) as Record<string, string>
  for (let i = 0; i + 1 < entry.fields.length; i += 2) {
    const k = entry.fields[i] as string
    const v = entry.fields[i + 1] as string
    if (k.startsWith('dlq_')) dlq[k] ??= v
    else original.push(k, v)
  }
  const encoded = dlq[DlqFields.encodedFields]
  if (encoded !== undefined) original = original.concat(expandEncoded(encoded) ?? [])
  for (let i = 0; i + 1 < original.length; i += 2) fields[original[i] as string] ??= original[i + 1] as string
  for (const [k, v] of Object.entries(dlq)) if (k !== DlqFields.encodedFields) fields[k] = v
  let event: Event | null
  try {
    const decoded = decodeEntry(original, maxPayloadBytes, maxPayloadDepth).event
    if (decoded.payload === undefined) throw new Error('unreachable: JSON has no undefined') // parsed now: a payload that cannot be parsed makes the event null
    event = decoded
  } catch {
    event = null
  }
  const deliveries = optionalNumber(dlq[DlqFields.deliveries]) ?? optionalNumber(dlq[DlqFields.attempts]) ?? 0
  return {
    dlqId: entry.id,
    topic,
    event,
    fields,
    originalId: dlq[DlqFields.originalId] ?? '',
    group: dlq[DlqFields.group] ?? '',
    error: dlq[DlqFields.error] ?? '',
    deliveries,
    attempts: deliveries,
    handlerRuns: optionalNumber(dlq[DlqFields.handlerRuns]),
    errorClass: dlq[DlqFields.errorClass] ?? null,
    stack: dlq[DlqFields.stack] ?? null,
    consumer: dlq[DlqFields.consumer] ?? null,
    failedAt: Number(dlq[DlqFields.failedAt] ?? 0),
  }
}

/**
 * Dead letter management: list, inspect, replay (targeted at the group that
 * failed), remove and purge a topic's dead letters.
 *
 * @example
 * ```ts
 * const dlq = events.deadLetters
 * for (const letter of await dlq.list('user-events', { count: 10 })) {
 *   console.log(letter.group, letter.error)
 *   await dlq.replay('user-events', letter.dlqId)   // only letter.group handles it again
 * }
 * ```
 */
export class DeadLetterQueue {
  readonly #backend: StreamBackend
  readonly #config: Config

  constructor(backend: StreamBackend, config: Config) {
    this.#backend = backend
    this.#config = config
  }

  get #depth(): number {
    return this.#config.maxPayloadDepth
  }

  /** Dead letters, oldest first; `after` is a DLQ id to page from (exclusive). */
  async list(topic: string, options: { readonly count?: number; readonly after?: string } = {}): Promise<DeadLetter[]> {
    validateTopic(topic)
    const entries = await this.#backend.dlqList(topic, { count: options.count ?? 100, ...(options.after === undefined ? {} : { after: options.after }) })
    return entries.map((e) => parse(topic, e, this.#config.maxPayloadBytes, this.#depth))
  }

  /** The original spec's `GetMessages(topic, count)`. */
  getMessages(topic: string, count: number): Promise<DeadLetter[]> {
    return this.list(topic, { count })
  }

  /** One dead letter, or null. */
  async get(topic: string, dlqId: string): Promise<DeadLetter | null> {
    validateTopic(topic)
    const entry = await this.#backend.dlqGet(topic, dlqId)
    return entry === null ? null : parse(topic, entry, this.#config.maxPayloadBytes, this.#depth)
  }

  /** How many dead letters the topic holds. */
  count(topic: string): Promise<number> {
    validateTopic(topic)
    return this.#backend.dlqCount(topic)
  }

  /** Sends a dead letter back to its topic, for its group only; resolves to the new stream id, or null if it does not exist. */
  replay(topic: string, dlqId: string): Promise<string | null> {
    validateTopic(topic)
    return this.#backend.dlqReplay(topic, dlqId, this.#config.streamMaxLen === undefined ? {} : { maxLen: this.#config.streamMaxLen })
  }

  /** The original spec's `ReplayMessage(topic, id)`. */
  replayMessage(topic: string, dlqId: string): Promise<string | null> {
    return this.replay(topic, dlqId)
  }

  /**
   * Replays every dead letter (of one group, or matching a filter); resolves to
   * how many. A replayed event that fails again while this runs is not replayed
   * a second time by this call.
   */
  async replayAll(topic: string, options: ReplayAllOptions = {}): Promise<number> {
    validateTopic(topic)
    let replayed = 0
    let after: string | undefined
    // Stream ids this call created: a dead letter whose original id is one of them failed again after its replay.
    const replayedIds = new Set<string>()
    for (;;) {
      const page = await this.list(topic, { count: 200, ...(after === undefined ? {} : { after }) })
      const last = page[page.length - 1]
      if (last === undefined) break
      after = last.dlqId
      for (const letter of page) {
        if (replayedIds.has(letter.originalId)) continue
        if (options.group !== undefined && letter.group !== options.group) continue
        if (options.filter && !options.filter(letter)) continue
        const streamId = await this.replay(topic, letter.dlqId)
        if (streamId !== null) {
          replayedIds.add(streamId)
          replayed++
        }
      }
      options.onProgress?.(replayed)
    }
    return replayed
  }

  /** Deletes dead letters; resolves to how many existed. */
  remove(topic: string, ...dlqIds: string[]): Promise<number> {
    validateTopic(topic)
    return this.#backend.dlqRemove(topic, dlqIds)
  }

  /** Deletes every dead letter of a topic; resolves to how many there were. */
  purge(topic: string): Promise<number> {
    validateTopic(topic)
    return this.#backend.dlqPurge(topic)
  }

  /** Deletes dead letters older than `dlqTtl` (also done on every move and periodically). */
  trimExpired(topic: string, now: number = Date.now()): Promise<number> {
    validateTopic(topic)
    return this.#backend.dlqTrim(topic, now - this.#config.dlqTtlMs)
  }
}
