/**
 * The life of one delivered message, as one pure function of (phase, event).
 *
 * ```
 *             begin                 ack | deadLetter           stored
 *   queued ─────────▶ running ─────────────────────▶ settling ───────▶ done
 *     │  ▲               │  ▲ begin (next attempt)      │
 *     │  └── (none) ─────┘  │                           │ storeFailed
 *     │                     │ nack | expire             ▼
 *     │ expire | giveBack   ▼                         failed ── ack | deadLetter ─▶ settling
 *     ▼                   waiting ── redelivered ─▶ done (superseded by its new copy)
 *  withdrawn ◀── giveBack ──┘
 * ```
 *
 * - `queued`: delivered and emitted, no handler started it; its consumer timeout counts from
 *   the delivery (or its `holdUntil`). On `expire` it is given back (withdrawn), no delivery counted.
 * - `running`: a handler attempt runs (`begin()`); `expire` fails the attempt (a nack).
 * - `waiting`: nacked, keeps its credit until its redelivery replaces it with a new copy.
 * - `settling`: an ack or dead-letter move is being stored.
 * - `failed`: the store failed; the entry stays pending; a later ack or dead-letter may retry.
 * - `done`, `withdrawn`: final. A final copy is never started again.
 *
 * The subscription performs the effects (timers, credit, store calls); this module only decides
 * which transitions exist, so that they can be tested on their own.
 */
export type Phase = 'queued' | 'running' | 'waiting' | 'settling' | 'failed' | 'done' | 'withdrawn'

/** What can happen to a message. */
export type LifeEvent = 'begin' | 'ack' | 'nack' | 'deadLetter' | 'stored' | 'storeFailed' | 'expire' | 'giveBack' | 'redelivered'

const T: Readonly<Record<Phase, Partial<Record<LifeEvent, Phase>>>> = {
  queued: { begin: 'running', ack: 'settling', deadLetter: 'settling', nack: 'waiting', expire: 'withdrawn', giveBack: 'withdrawn' },
  running: { begin: 'running', ack: 'settling', deadLetter: 'settling', nack: 'waiting', expire: 'waiting', giveBack: 'withdrawn' },
  waiting: { redelivered: 'done', giveBack: 'withdrawn' },
  settling: { stored: 'done', storeFailed: 'failed' },
  failed: { ack: 'settling', deadLetter: 'settling', nack: 'withdrawn', giveBack: 'withdrawn' },
  done: {},
  withdrawn: {},
}

/** The phase after `event`, or undefined when `event` does not apply in `phase` (the caller ignores it). */
export function step(phase: Phase, event: LifeEvent): Phase | undefined {
  return T[phase][event]
}

/** Whether a message in this phase holds one unit of its subscription's credit. */
export function holdsCredit(phase: Phase): boolean {
  return phase === 'queued' || phase === 'running' || phase === 'waiting' || phase === 'settling'
}

/** Whether a message in this phase may still be settled by its holder (ack, nack, dead-letter). */
export function isSettleablePhase(phase: Phase): boolean {
  return phase === 'queued' || phase === 'running' || phase === 'failed'
}
