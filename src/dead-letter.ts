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
  /** The original stream fields, as stored. */
  readonly fields: Readonly<Record<string, string>>
  /** Its id in the topic stream when it failed. */
  readonly originalId: string
  /** The consumer group that failed it. */
  readonly group: string
  /** Why it failed (capped). */
  readonly error: string
  /** Deliveries it had. */
  readonly attempts: number
  /** When it was moved, ms since the epoch. */
  readonly failedAt: number
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

function parse(topic: string, entry: StoredEntry, maxPayloadBytes: number): DeadLetter {
  const fields: Record<string, string> = Object.create(null) as Record<string, string>
  const original: string[] = []
  for (let i = 0; i + 1 < entry.fields.length; i += 2) {
    const k = entry.fields[i] as string
    const v = entry.fields[i + 1] as string
    fields[k] = v
    if (!k.startsWith('dlq_')) original.push(k, v)
  }
  let event: Event | null
  try {
    event = decodeEntry(original, maxPayloadBytes).event
  } catch {
    event = null
  }
  return {
    dlqId: entry.id,
    topic,
    event,
    fields,
    originalId: fields[DlqFields.originalId] ?? '',
    group: fields[DlqFields.group] ?? '',
    error: fields[DlqFields.error] ?? '',
    attempts: Number(fields[DlqFields.attempts] ?? 0),
    failedAt: Number(fields[DlqFields.failedAt] ?? 0),
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

  /** Dead letters, oldest first; `after` is a DLQ id to page from (exclusive). */
  async list(topic: string, options: { readonly count?: number; readonly after?: string } = {}): Promise<DeadLetter[]> {
    validateTopic(topic)
    const entries = await this.#backend.dlqList(topic, { count: options.count ?? 100, ...(options.after === undefined ? {} : { after: options.after }) })
    return entries.map((e) => parse(topic, e, this.#config.maxPayloadBytes))
  }

  /** The original spec's `GetMessages(topic, count)`. */
  getMessages(topic: string, count: number): Promise<DeadLetter[]> {
    return this.list(topic, { count })
  }

  /** One dead letter, or null. */
  async get(topic: string, dlqId: string): Promise<DeadLetter | null> {
    validateTopic(topic)
    const entry = await this.#backend.dlqGet(topic, dlqId)
    return entry === null ? null : parse(topic, entry, this.#config.maxPayloadBytes)
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
