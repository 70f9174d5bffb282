import { isLeft, left, right, type Either } from 'fp-ts/lib/Either.js'
import type * as t from 'io-ts'
import { PathReporter } from 'io-ts/lib/PathReporter.js'
import { mergeMap, map, EMPTY, of, type OperatorFunction } from 'rxjs'
import type { Message } from '../src/consumer/message.js'
import { DecodeError } from '../src/errors.js'
import { settleQuietly } from './handle-each.js'

/** A message whose payload did not decode, with the readable report. */
export interface DecodeFailure<P = unknown> {
  readonly message: Message<P>
  readonly error: DecodeError
}

/** Decodes a message's payload with an io-ts codec; never throws. */
export function decodeMessage<A, P>(codec: t.Decoder<unknown, A>, message: Message<P>): Either<DecodeFailure<P>, Message<A>> {
  let payload: unknown
  try {
    payload = message.event.payload
  } catch (error) {
    const decodeError = error instanceof DecodeError ? error : new DecodeError('malformed_json', String(error))
    return left({ message, error: decodeError })
  }
  const result = codec.decode(payload)
  if (isLeft(result)) {
    const report = PathReporter.report(result).join('; ')
    return left({ message, error: new DecodeError('invalid_payload', `${message.event.name}: ${report}`) })
  }
  return right(message.withPayload(result.right))
}

/**
 * Decodes each message's payload with an io-ts codec. A payload that does not
 * decode (or is not JSON) sends the message to the dead letter queue with the
 * path report as the reason — never retried, a poison payload never succeeds —
 * and is not emitted.
 *
 * ## Example
 * ```ts
 * import * as t from 'io-ts'
 * import { decode } from 'rx-redis-streams/operators'
 * const UserSignup = t.type({ userId: t.number, email: t.string })
 * messages$.pipe(decode(UserSignup)) // Observable<Message<{ userId: number; email: string }>>
 * ```
 * @param codec the io-ts codec of the payload
 * @returns an operator emitting messages with the decoded payload type
 */
export function decode<A, P = unknown>(codec: t.Decoder<unknown, A>): OperatorFunction<Message<P>, Message<A>> {
  return mergeMap((message) => {
    const result = decodeMessage(codec, message)
    if (isLeft(result)) {
      void settleQuietly(() => message.deadLetter(result.left.error))
      return EMPTY
    }
    return of(result.right)
  })
}

/**
 * Like {@link decode}, but emits an `Either` for users who route failures
 * themselves: `Left` carries the message and the DecodeError, nothing is settled.
 *
 * ## Example
 * ```ts
 * import { decodeEither } from 'rx-redis-streams/operators'
 * messages$.pipe(decodeEither(UserSignup)).subscribe((r) => (r._tag === 'Left' ? park(r.left) : handle(r.right)))
 * ```
 * @param codec the io-ts codec of the payload
 * @returns an operator emitting `Either<DecodeFailure, Message<A>>`
 */
export function decodeEither<A, P = unknown>(codec: t.Decoder<unknown, A>): OperatorFunction<Message<P>, Either<DecodeFailure<P>, Message<A>>> {
  return map((message) => decodeMessage(codec, message))
}
