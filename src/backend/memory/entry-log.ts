import { compareIds, formatId, type StreamId } from './stream-id.js'

/** One stored stream entry. Its fields are a private, frozen copy. */
export interface LogEntry extends StreamId {
  readonly id: string
  readonly fields: readonly string[]
}

/**
 * The entries of one stream in id order, with Redis' id generation: ids grow
 * strictly, from the clock when it moved on, else from the last id's sequence.
 * Trimming the head is amortised O(1) (the dead head is compacted away once it
 * is half the array); deleting from the middle is O(n).
 */
export class EntryLog {
  #items: LogEntry[] = []
  #head = 0
  /** The last id ever generated (kept when entries are trimmed or deleted, as Redis' `last_id`). */
  #last: StreamId = { ms: 0, seq: 0 }

  /** Number of entries held. */
  get length(): number {
    return this.#items.length - this.#head
  }

  /** The last id ever generated, `0-0` for a new stream. */
  get lastId(): StreamId {
    return this.#last
  }

  /** The oldest entry held. */
  first(): LogEntry | undefined {
    return this.#items[this.#head]
  }

  /** The newest entry held. */
  last(): LogEntry | undefined {
    return this.length === 0 ? undefined : this.#items[this.#items.length - 1]
  }

  /** Appends an entry (fields copied and frozen) with the next id for clock time `nowMs`. */
  add(fields: readonly string[], nowMs: number): LogEntry {
    const last = this.#last
    const id: StreamId = nowMs > last.ms ? { ms: nowMs, seq: 0 } : { ms: last.ms, seq: last.seq + 1 }
    const entry: LogEntry = { id: formatId(id), ms: id.ms, seq: id.seq, fields: Object.freeze([...fields]) }
    this.#items.push(entry)
    this.#last = id
    return entry
  }

  /** Index (absolute) of the first entry whose id is greater than `id` (or equal, when `inclusive`). */
  #lowerBound(id: StreamId, inclusive: boolean): number {
    let lo = this.#head
    let hi = this.#items.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const entry = this.#items[mid] as LogEntry
      const c = compareIds(entry, id)
      if (c > 0 || (inclusive && c === 0)) hi = mid
      else lo = mid + 1
    }
    return lo
  }

  /** Up to `count` entries with ids greater than `after` (`count` <= 0: no limit). */
  after(after: StreamId, count: number): LogEntry[] {
    const start = this.#lowerBound(after, false)
    const end = count > 0 ? Math.min(this.#items.length, start + count) : this.#items.length
    return this.#items.slice(start, end)
  }

  /** Up to `count` entries with ids in `[start, end]` (`count` <= 0: no limit). */
  range(start: StreamId, end: StreamId, count: number): LogEntry[] {
    const out: LogEntry[] = []
    for (let i = this.#lowerBound(start, true); i < this.#items.length; i++) {
      const entry = this.#items[i] as LogEntry
      if (compareIds(entry, end) > 0 || (count > 0 && out.length >= count)) break
      out.push(entry)
    }
    return out
  }

  /** How many entries have ids greater than `after`. */
  countAfter(after: StreamId): number {
    return this.#items.length - this.#lowerBound(after, false)
  }

  /** The entry with exactly this id. */
  get(id: StreamId): LogEntry | undefined {
    const entry = this.#items[this.#lowerBound(id, true)]
    return entry !== undefined && compareIds(entry, id) === 0 ? entry : undefined
  }

  /** Deletes the entry with this id (XDEL); true if it was there. */
  delete(id: StreamId): boolean {
    const index = this.#lowerBound(id, true)
    const entry = this.#items[index]
    if (entry === undefined || compareIds(entry, id) !== 0) return false
    if (index === this.#head) this.#dropHead(1)
    else this.#items.splice(index, 1)
    return true
  }

  /** Keeps the newest `maxLen` entries (exact XTRIM MAXLEN); returns how many were removed. */
  trimToLength(maxLen: number): number {
    const excess = this.length - Math.max(0, maxLen)
    if (excess <= 0) return 0
    this.#dropHead(excess)
    return excess
  }

  /** Removes entries with ids lower than `minId` (XTRIM MINID); returns how many. */
  trimBefore(minId: StreamId): number {
    const removed = this.#lowerBound(minId, true) - this.#head
    if (removed > 0) this.#dropHead(removed)
    return removed
  }

  #dropHead(n: number): void {
    this.#head += n
    if (this.#head === this.#items.length) {
      this.#items = []
      this.#head = 0
    } else if (this.#head >= 64 && this.#head * 2 >= this.#items.length) {
      // Compacting once the dead head is at least half the array keeps trimming amortised O(1).
      this.#items = this.#items.slice(this.#head)
      this.#head = 0
    }
  }
}
