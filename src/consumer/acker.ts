import type { StreamBackend } from '../backend/types.js'
import type { Logger } from '../logger.js'

/** What an ack settles: told whether its XACK was stored. */
export interface AckTarget {
  stored(outcome: 'acked', ok: boolean): unknown
}

/** Ids waiting for one XACK, and the one promise all their callers share. */
interface Batch {
  ids: string[]
  /** The messages of the ids, told the result (null for ids acked without one). */
  targets: (AckTarget | null)[]
  /** Resolves to 'acked' once the XACK succeeded, 'failed' once it gave up (shared: no allocation per message); never rejects. */
  done: Promise<'acked' | 'failed'>
  resolve: (outcome: 'acked' | 'failed') => void
}

function newBatch(): Batch {
  let resolve: (outcome: 'acked' | 'failed') => void = () => undefined
  const done = new Promise<'acked' | 'failed'>((res) => {
    resolve = res
  })
  return { ids: [], targets: [], done, resolve }
}

/** The batch queued for one topic and group. */
interface QueuedBatch {
  readonly key: string
  readonly topic: string
  readonly group: string
  readonly batch: Batch
}

/** Flush at once when this many acks are waiting, rather than at the end of the tick. */
const MAX_BATCH = 1_000
const ATTEMPTS = 3

/**
 * Coalesces acks: one XACK per topic and group per tick (or per `MAX_BATCH`
 * ids), not one per message. A failed XACK is retried; if it keeps failing,
 * the entries stay pending and are delivered again (at least once).
 */
export class AckBatcher {
  readonly #backend: StreamBackend
  readonly #logger: Logger
  readonly #batches = new Map<string, QueuedBatch>()
  /** The entry the last ack went to, while it is still queued. */
  #last: QueuedBatch | undefined
  readonly #inFlight = new Set<Promise<void>>()
  #scheduled = false

  constructor(backend: StreamBackend, logger: Logger) {
    this.#backend = backend
    this.#logger = logger
  }

  /**
   * Queues an ack; resolves to 'acked' once the XACK that carries it has
   * succeeded, 'failed' when it gave up (one promise per batch, never
   * rejects). `target` is told the result before the promise resolves.
   */
  ack(topic: string, group: string, id: string, target: AckTarget | null = null): Promise<'acked' | 'failed'> {
    // The batch of the previous call (mostly the same subscription's): no key string and no lookup per ack.
    let entry = this.#last
    if (entry === undefined || entry.topic !== topic || entry.group !== group) {
      const key = `${topic}\u0000${group}`
      entry = this.#batches.get(key)
      if (entry === undefined) {
        entry = { key, topic, group, batch: newBatch() }
        this.#batches.set(key, entry)
      }
      this.#last = entry
    }
    const { batch } = entry
    batch.ids.push(id)
    batch.targets.push(target)
    const done = batch.done
    if (batch.ids.length >= MAX_BATCH) {
      this.#batches.delete(entry.key)
      this.#last = undefined
      this.#send(topic, group, batch)
    } else if (!this.#scheduled) {
      this.#scheduled = true
      setImmediate(() => {
        this.#scheduled = false
        this.#flushQueued()
      })
    }
    return done
  }

  #flushQueued(): void {
    const batches = [...this.#batches.values()]
    this.#batches.clear()
    this.#last = undefined
    for (const { topic, group, batch } of batches) this.#send(topic, group, batch)
  }

  #send(topic: string, group: string, batch: Batch): void {
    const run = (async () => {
      let lastError: unknown
      for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
        try {
          await this.#backend.ack(topic, group, batch.ids)
          for (const target of batch.targets) target?.stored('acked', true)
          batch.resolve('acked')
          return
        } catch (error) {
          lastError = error
          if (attempt < ATTEMPTS) await new Promise((r) => setTimeout(r, 50 * 4 ** attempt))
        }
      }
      this.#logger.error({ topic, group, count: batch.ids.length, err: lastError }, 'ack failed; the entries stay pending and will be delivered again')
      for (const target of batch.targets) target?.stored('acked', false)
      batch.resolve('failed')
    })()
    this.#inFlight.add(run)
    void run.finally(() => this.#inFlight.delete(run))
  }

  /** Sends every queued ack now and waits for all acks in flight. */
  async flush(): Promise<void> {
    this.#flushQueued()
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight])
  }
}
