import { isLeft } from 'fp-ts/lib/Either.js'
import type * as t from 'io-ts'
import type { Message } from '../src/consumer/message.js'
import { decodeMessage } from './decode.js'
import type { Handler, HandlerContext } from './handle-each.js'

/**
 * Wraps a handler of decoded payloads (the original spec's typed handlers): the
 * payload is decoded with `codec`, and a payload that does not decode throws a
 * DecodeError, which sends the message to the dead letter queue without retries.
 * The handler's third argument carries the attempt's `signal`.
 *
 * ## Example
 * ```ts
 * import * as t from 'io-ts'
 * import { typedHandler } from 'rx-redis-streams/operators'
 * const UserSignup = t.type({ userId: t.number, email: t.string, plan: t.string })
 * events.subscribe('user-events', 'signup', typedHandler(UserSignup, async (payload, msg) => {
 *   console.log(`User ${payload.userId} signed up with ${payload.email}`)
 * }))
 * ```
 * @param codec the io-ts codec of the payload
 * @param handler the work, given the decoded payload and the message
 * @returns a handler for `handleEach` or `events.subscribe`
 */
export function typedHandler<A>(codec: t.Decoder<unknown, A>, handler: (payload: A, message: Message<A>, context: HandlerContext) => unknown): Handler {
  return async (message, context) => {
    const decoded = decodeMessage(codec, message)
    if (isLeft(decoded)) throw decoded.left.error
    await handler(decoded.right.event.payload, decoded.right, context)
  }
}
