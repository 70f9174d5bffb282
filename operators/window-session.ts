import type { OperatorFunction } from 'rxjs'
import type { Settleable } from '../src/settle.js'
import { requirePositive, windowOperator, type OpenWindow, type Placement } from './internal/window-engine.js'
import type { LatePolicy, Timestamped, Late, Window, WindowOptions, WindowOutput } from './window-types.js'

/**
 * Options of {@link windowSession}: every field is described on
 * {@link WindowOptions} (`key`, `timestamp`, `grace`, `maxMessages`,
 * `maxOpenMessages`, `idleTimeout`, `late`, `scheduler`).
 */
export type WindowSessionOptions<T, L extends LatePolicy = 'deadLetter'> = WindowOptions<T, L>

/**
 * Session placement: each event is a window `[time, time + gap)`; windows that
 * overlap merge. So a session grows while its events are less than `gap`
 * apart, and an event arriving out of order (within grace) that bridges two
 * sessions merges them.
 */
function sessions<T>(gap: number): () => Placement<T> {
  return () => {
    const byKey = new Map<string, OpenWindow<T>[]>()
    return {
      place(key, time, streamTime, grace, book) {
        const open = byKey.get(key) ?? []
        const touching = open.filter((session) => time < session.end && time + gap > session.start)
        const [first, ...rest] = touching
        if (first === undefined) {
          if (time + gap + grace <= streamTime) return []
          const session = book.open(key, time, time + gap)
          open.push(session)
          open.sort((a, b) => a.start - b.start)
          byKey.set(key, open)
          return [session]
        }
        let start = Math.min(time, first.start)
        let end = Math.max(time + gap, first.end)
        for (const other of rest) {
          start = Math.min(start, other.start)
          end = Math.max(end, other.end)
          book.merge(first, other)
        }
        book.resize(first, start, end)
        return [first]
      },
      detach(window) {
        const open = byKey.get(window.key)
        if (open === undefined) return
        const at = open.indexOf(window)
        if (at >= 0) open.splice(at, 1)
        if (open.length === 0) byKey.delete(window.key)
      },
    }
  }
}

/**
 * Groups messages into event-time sessions per key: a session extends while
 * its events are less than `gap` ms apart, and is emitted when stream time
 * reaches its last event time + `gap` + `grace`. The emitted window spans
 * `[first event time, last event time + gap)`. An out-of-order event (within
 * grace) that falls between two open sessions of its key merges them. With
 * `maxMessages`, a full session is emitted early and the next event starts a
 * new one. After a restart, stream time resumes from the remembered
 * closed-window watermark (kept in the store per group and `name`), so a
 * replayed event of a session that closed is late rather than a new partial
 * session. Per-key sessions need one consumer per key (see `key`).
 *
 * ## Example
 * ```ts
 * import { windowSession, handleEach } from 'rx-redis-streams/operators'
 * // one summary per visit: a visit ends after 30 minutes without a page view
 * pageViews$.pipe(
 *   windowSession(30 * 60_000, { key: (m) => m.event.payload.visitorId, idleTimeout: 60_000, maxOpenMessages: 1_000 }),
 *   handleEach((visit) => saveVisit(visit.key, visit.start, visit.end, visit.messages.length)),
 * ).subscribe()
 * ```
 * @param gap inactivity gap in ms that ends a session
 * @param options per-key sessions, event time, grace, limits, idle advancement, late policy
 * @returns an operator from messages to session windows (and {@link Late} events with `late: 'emit'`)
 */
export function windowSession<T extends Settleable, L extends LatePolicy = 'deadLetter'>(
  gap: number,
  options: WindowSessionOptions<T, L> & { readonly timestamp: (value: T) => number },
): OperatorFunction<T, WindowOutput<T, L>>
export function windowSession<T extends Timestamped, L extends LatePolicy = 'deadLetter'>(
  gap: number,
  options?: WindowSessionOptions<T, L>,
): OperatorFunction<T, WindowOutput<T, L>>
export function windowSession<T extends Settleable>(
  gap: number,
  options: WindowSessionOptions<T, LatePolicy> = {},
): OperatorFunction<T, Window<T> | Late<T>> {
  requirePositive('gap', gap)
  return windowOperator(options, sessions<T>(gap), `session-${gap}-${options.grace ?? 0}`)
}
