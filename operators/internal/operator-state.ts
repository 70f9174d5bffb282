import { entryIdOf, operatorStateOf, type OperatorStateBackend } from '../../src/shared-settlement.js'

/*
 * What window and join operators remember across restarts, in the store that
 * delivered their messages (Redis: `event:opstate:{topic}:<group>:<name>:<part>`
 * hashes, one script per change, never two topics in one script): per group
 * and operator name, which windows were emitted and settled and the
 * closed-window watermark, and which join entries matched.
 */

/** How long operator state outlives the window or join retention it belongs to, ms. */
export const STATE_RETENTION_MS = 24 * 3_600_000

/** State parts are bucketed by event time, so old parts expire as a whole. */
const BUCKET_MS = 3_600_000

/** The part (time bucket) holding the state of an event time. */
export function statePart(prefix: string, time: number): string {
  return `${prefix}${Math.floor(time / BUCKET_MS)}`
}

/** Where one operator keeps the state of one topic and group. */
export interface StateScope {
  readonly id: string
  readonly topic: string
  readonly group: string
  readonly consumer: string
  readonly store: OperatorStateBackend
}

/** The state scope of a message: its store, topic, group and consumer; undefined without a store. */
export function stateScopeOf(value: unknown): StateScope | undefined {
  const store = operatorStateOf(value)
  if (store === undefined || entryIdOf(value) === undefined) return undefined
  const v = value as { readonly topic: string; readonly group: string; readonly consumer?: unknown }
  return { id: `${v.topic}\u0000${v.group}`, topic: v.topic, group: v.group, consumer: typeof v.consumer === 'string' ? v.consumer : '', store }
}

/** The delivery count of a message (1 when unknown): a replay after a crash, a claim or a nack has more. */
export function deliveryCountOf(value: unknown): number {
  const count = (value as { readonly deliveryCount?: unknown }).deliveryCount
  return typeof count === 'number' ? count : 1
}

/** The stream id of a message. */
export function streamIdOf(value: unknown): string {
  return String((value as { readonly streamId?: unknown }).streamId)
}

/**
 * Runs the operator's steps in arrival order while some wait for a state
 * lookup: a step whose lookup is pending holds back the steps behind it.
 * Without pending lookups a step runs at once (synchronously).
 */
export class StepQueue {
  readonly #steps: { ready: boolean; run: () => void }[] = []
  #closed = false

  /** Runs `run` now when nothing waits, else after the steps before it (and after `wait`, if given). */
  push(run: () => void, wait?: Promise<unknown>): void {
    if (this.#closed) return
    if (wait === undefined && this.#steps.length === 0) {
      run()
      return
    }
    const step = { ready: wait === undefined, run }
    this.#steps.push(step)
    if (wait !== undefined) {
      void wait
        .catch(() => undefined)
        .then(() => {
          step.ready = true
          this.#drain()
        })
    }
  }

  /** Drops the waiting steps (unsubscribe, error). */
  close(): void {
    this.#closed = true
    this.#steps.length = 0
  }

  #drain(): void {
    for (;;) {
      const step = this.#steps[0]
      if (step === undefined || !step.ready || this.#closed) return
      this.#steps.shift()
      step.run()
    }
  }
}

/** Reports that two consumers of one group emitted one key's window: per-key windows need one consumer per key. */
export function warnSplitKey(operator: string, key: string, start: number, end: number, consumer: string, other: string): void {
  process.emitWarning(
    `window [${start}, ${end}) of key ${JSON.stringify(key)} of operator ${JSON.stringify(operator)} was emitted by consumer ${JSON.stringify(other)} and now by ${JSON.stringify(consumer)}: ` +
      'per-key windows need one consumer per key (run one consumer in the group), unless this is a takeover after a crash',
    { code: 'RX_REDIS_STREAMS_SPLIT_WINDOW' },
  )
}
