import type { StreamBackend } from './backend/types.js'
import { MAX_TIMER_MS } from './consumer/timers.js'
import type { Logger } from './logger.js'
import { messagingAttributes, type Instruments } from './telemetry/instruments.js'

const BATCH = 100

/**
 * Moves a topic's delayed events to its stream when they are due. Sleeps until
 * the earliest due time (capped by `checkIntervalMs`, so events scheduled by
 * other processes are seen), so precision is milliseconds. Any number of
 * promoters may run for one topic: the move is one atomic script.
 */
export class DelayedPromoter {
  readonly topic: string
  readonly #backend: StreamBackend
  readonly #checkIntervalMs: number
  readonly #logger: Logger
  readonly #instruments: Instruments
  readonly #maxLen: number | undefined
  #timer: NodeJS.Timeout | undefined
  #wakeAt = Infinity
  #running = false
  #again = false
  #stopped = false
  #lastRunAt: number | null = null
  #failures = 0

  constructor(options: { topic: string; backend: StreamBackend; checkIntervalMs: number; logger: Logger; instruments: Instruments; maxLen?: number | undefined }) {
    this.topic = options.topic
    this.#backend = options.backend
    this.#checkIntervalMs = options.checkIntervalMs
    this.#logger = options.logger
    this.#instruments = options.instruments
    this.#maxLen = options.maxLen
  }

  /** When the promoter last completed a pass (for health). */
  get lastRunAt(): number | null {
    return this.#lastRunAt
  }

  get alive(): boolean {
    return !this.#stopped
  }

  start(): void {
    this.#schedule(0)
  }

  /** An event is due at `dueAt`: wake earlier if needed. */
  notify(dueAt: number): void {
    if (dueAt < this.#wakeAt) this.#schedule(Math.max(0, dueAt - Date.now()))
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return
    clearTimeout(this.#timer)
    // Node fires timers longer than 2^31 − 1 ms after 1 ms: wake at the cap and look again (a pass re-arms).
    const delay = Math.min(Math.max(0, delayMs), MAX_TIMER_MS)
    this.#wakeAt = Date.now() + delay
    this.#timer = setTimeout(() => void this.#tick(), delay)
    this.#timer.unref()
  }

  async #tick(): Promise<void> {
    if (this.#stopped) return
    if (this.#running) {
      this.#again = true
      return
    }
    this.#running = true
    this.#again = false
    this.#wakeAt = Infinity
    let next = this.#checkIntervalMs
    try {
      let result
      do {
        result = await this.#backend.promoteDue(this.topic, Date.now(), BATCH, this.#maxLen === undefined ? {} : { maxLen: this.#maxLen })
        if (result.promoted > 0) this.#instruments.promoted.add(result.promoted, messagingAttributes(this.topic))
      } while (result.promoted === BATCH && !this.#flags().stopped)
      this.#failures = 0
      this.#lastRunAt = Date.now()
      if (result.nextDueAt !== null) next = Math.min(next, Math.max(0, result.nextDueAt - Date.now()))
    } catch (error) {
      this.#failures++
      // Backs off, but not so far that promotion lags long once Redis is back.
      next = Math.min(this.#checkIntervalMs * 2 ** Math.min(this.#failures, 5), Math.max(this.#checkIntervalMs, 5_000))
      this.#logger.warn({ err: error, topic: this.topic }, 'delayed promotion failed; retrying')
    } finally {
      this.#running = false
    }
    if (this.#flags().again) this.#schedule(0)
    else if (this.#wakeAt === Infinity || Date.now() + next < this.#wakeAt) this.#schedule(next)
  }

  /** Flags that change while a pass awaits (a method, so checks after an await are not narrowed away). */
  #flags(): { stopped: boolean; again: boolean } {
    return { stopped: this.#stopped, again: this.#again }
  }

  stop(): void {
    this.#stopped = true
    clearTimeout(this.#timer)
  }
}
