/** One delayed event as stored: fields are a private, frozen copy. */
export interface DelayedItem {
  readonly eventId: string
  readonly dueAt: number
  readonly fields: readonly string[]
}

/** Sorted set order: by due time, then by event id (Redis orders equal scores by member). */
function compareItems(a: DelayedItem, b: DelayedItem): number {
  if (a.dueAt !== b.dueAt) return a.dueAt < b.dueAt ? -1 : 1
  return a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0
}

/**
 * The delayed events of one topic: a sorted set (event id scored by due time)
 * plus the event fields, like the Redis `delayed` sorted set and `delayed-data` hash.
 */
export class DelayedQueue {
  readonly #sorted: DelayedItem[] = []
  readonly #byId = new Map<string, DelayedItem>()

  /** Number of events waiting. */
  get size(): number {
    return this.#sorted.length
  }

  /** The earliest event waiting. */
  first(): DelayedItem | undefined {
    return this.#sorted[0]
  }

  #indexOf(item: DelayedItem): number {
    let lo = 0
    let hi = this.#sorted.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (compareItems(this.#sorted[mid] as DelayedItem, item) < 0) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  /** Adds an event, replacing one with the same id (ZADD + HSET). */
  put(eventId: string, dueAt: number, fields: readonly string[]): void {
    this.remove(eventId)
    const item: DelayedItem = { eventId, dueAt, fields: Object.freeze([...fields]) }
    this.#sorted.splice(this.#indexOf(item), 0, item)
    this.#byId.set(eventId, item)
  }

  /** Removes an event (ZREM + HDEL); true if it was waiting. */
  remove(eventId: string): boolean {
    const item = this.#byId.get(eventId)
    if (item === undefined) return false
    this.#byId.delete(eventId)
    this.#sorted.splice(this.#indexOf(item), 1)
    return true
  }

  /** Removes and returns up to `limit` events due at `now`, earliest first (`limit` < 0: all, as ZRANGEBYSCORE LIMIT). */
  takeDue(now: number, limit: number): DelayedItem[] {
    let n = 0
    const max = limit < 0 ? this.#sorted.length : Math.min(limit, this.#sorted.length)
    while (n < max && (this.#sorted[n] as DelayedItem).dueAt <= now) n++
    const due = this.#sorted.splice(0, n)
    for (const item of due) this.#byId.delete(item.eventId)
    return due
  }

  /** Events by rank, `start` to `stop` inclusive, negative ranks counting from the end (ZRANGE). */
  range(start: number, stop: number): DelayedItem[] {
    const length = this.#sorted.length
    let from = start < 0 ? start + length : start
    let to = stop < 0 ? stop + length : stop
    if (from < 0) from = 0
    if (to >= length) to = length - 1
    if (from > to || from >= length) return []
    return this.#sorted.slice(from, to + 1)
  }
}
