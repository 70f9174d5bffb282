import { filter, type MonoTypeOperatorFunction } from 'rxjs'
import type { Message } from '../src/consumer/message.js'
import { Share } from '../src/shared-settlement.js'
import { settleQuietly } from './handle-each.js'

/** What {@link matchPattern} matches. Every given part must match. */
export interface EventPattern<P = unknown> {
  /** Event name: exact, or a glob (`*` = any run of characters except `.`, `**` = any run, `?` = one character). */
  readonly eventName?: string
  /** Header values that must be equal. */
  readonly headers?: Readonly<Record<string, string>>
  /** Topic (useful when several topics are merged). */
  readonly topic?: string
  /** Any further test. */
  readonly predicate?: (message: Message<P>) => boolean
}

/** Options of {@link matchPattern}. */
export interface MatchPatternOptions {
  /** What happens to a message that does not match: `ack` (default: this group is done with it) or `leave` (another operator must settle it). */
  readonly onMismatch?: 'ack' | 'leave'
}

const globCache = new Map<string, RegExp>()

/** Compiles an event-name glob to a RegExp (cached). */
export function globToRegExp(glob: string): RegExp {
  let re = globCache.get(glob)
  if (re === undefined) {
    let source = ''
    for (let i = 0; i < glob.length; i++) {
      const c = glob[i] as string
      if (c === '*' && glob[i + 1] === '*') {
        source += '.*'
        i++
      } else if (c === '*') source += '[^.]*'
      else if (c === '?') source += '.'
      else source += c.replace(/[\\^$.|+()[\]{}]/g, '\\$&')
    }
    re = new RegExp(`^${source}$`)
    globCache.set(glob, re)
  }
  return re
}

/** True if the message matches the pattern (the payload is never parsed for name and headers). */
export function matches<P>(pattern: EventPattern<P>, message: Message<P>): boolean {
  const name = pattern.eventName
  if (name !== undefined) {
    const isGlob = name.includes('*') || name.includes('?')
    if (isGlob ? !globToRegExp(name).test(message.event.name) : name !== message.event.name) return false
  }
  if (pattern.topic !== undefined && pattern.topic !== message.topic) return false
  if (pattern.headers !== undefined) {
    for (const [k, v] of Object.entries(pattern.headers)) if (message.event.headers[k] !== v) return false
  }
  return pattern.predicate === undefined || pattern.predicate(message)
}

/**
 * Lets through only messages that match the pattern; the others are acked
 * (or left unsettled, by option) and not emitted. Behind `share()`, a mismatch is
 * released as one holder's share: while a window or join of another branch
 * holds it, the entry is acked only once that holder settles too. For any other predicate, see `filterMessages`.
 *
 * ## Example
 * ```ts
 * import { matchPattern } from 'rx-redis-streams/operators'
 * events.topic('user-events').consume({ group: 'web-signups' }).pipe(
 *   matchPattern({ eventName: 'user.*', headers: { source: 'web-app' } }),
 * )
 * ```
 * @param pattern event name (exact or glob), headers, topic, predicate
 * @param options what to do with a message that does not match
 * @returns an operator that filters messages
 */
export function matchPattern<P>(pattern: EventPattern<P>, options: MatchPatternOptions = {}): MonoTypeOperatorFunction<Message<P>> {
  const ackMismatch = (options.onMismatch ?? 'ack') === 'ack'
  return filter((message) => {
    if (matches(pattern, message)) return true
    if (ackMismatch) void settleQuietly(() => new Share(message).ack())
    return false
  })
}
