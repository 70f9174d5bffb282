export { matchPattern, matches, globToRegExp, type EventPattern, type MatchPatternOptions } from './match-pattern.js'
export { decode, decodeEither, decodeMessage, type DecodeFailure } from './decode.js'
export { retryWithBackoff, backoffDelay, type RetryWithBackoffConfig } from './retry-with-backoff.js'
export { toDeadLetter } from './to-dead-letter.js'
export { ackOnComplete } from './ack-on-complete.js'
export { handleEach, type Handler, type HandleEachOptions, type Handled } from './handle-each.js'
export { orderedBy } from './ordered-by.js'
export { typedHandler } from './typed-handler.js'
export { windowTumbling, type WindowTumblingOptions } from './window-tumbling.js'
export { windowSliding, type WindowSlidingOptions } from './window-sliding.js'
export { windowSession, type WindowSessionOptions } from './window-session.js'
export { joinWithin, type JoinWithinOptions } from './join-within.js'
export { reduceWindow } from './reduce-window.js'
export {
  isWindow,
  isLate,
  LateEventError,
  UnmatchedJoinError,
  type Window,
  type Late,
  type LatePolicy,
  type WindowOptions,
  type WindowOutput,
  type WindowResult,
  type JoinedPair,
  type JoinResult,
  type JoinType,
  type Timestamped,
} from './window-types.js'
export { filterMessages, type FilterMessagesOptions } from './filter-messages.js'
export type { HandlerContext, SettleableHandler } from './handle-each.js'
