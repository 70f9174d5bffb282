/**
 * Typed errors raised by rx-redis-streams. Every error the library throws or
 * rejects with is an {@link EventSystemError}, with a stable `code` to switch on.
 *
 * @example
 * ```ts
 * import { InvalidTopicError } from 'rx-redis-streams'
 * try { await events.publish('bad topic', evt) } catch (e) {
 *   if (e instanceof InvalidTopicError) console.error(e.code, e.message)
 * }
 * ```
 */
export class EventSystemError extends Error {
  /** A stable, machine-readable error code. */
  readonly code: string

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.code = code
    this.name = new.target.name
  }
}

/** A topic name that is empty, too long, or holds characters outside `[A-Za-z0-9._:-]`. */
export class InvalidTopicError extends EventSystemError {
  constructor(readonly topic: string, reason: string) {
    super('INVALID_TOPIC', `invalid topic ${JSON.stringify(topic.slice(0, 210))}: ${reason}`)
  }
}

/** A consumer group or consumer name that cannot be used. */
export class InvalidNameError extends EventSystemError {
  constructor(kind: string, value: string, reason: string) {
    super('INVALID_NAME', `invalid ${kind} ${JSON.stringify(value.slice(0, 210))}: ${reason}`)
  }
}

/** An encoded payload larger than `maxPayloadBytes`. Raised before any I/O. */
export class PayloadTooLargeError extends EventSystemError {
  /** @param part what is too large: the payload, or the encoded headers (capped at the same limit) */
  constructor(readonly bytes: number, readonly limit: number, readonly part: 'payload' | 'headers' = 'payload') {
    super('PAYLOAD_TOO_LARGE', `${part} of ${bytes} bytes exceeds the limit of ${limit} bytes`)
  }
}

/** A payload or header that cannot be serialized to JSON (cycles, BigInt, non-string headers...). */
export class SerializationError extends EventSystemError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('SERIALIZATION_FAILED', message, options)
  }
}

/** Why a stream entry could not be decoded into an event. */
export type DecodeReason =
  | 'malformed_json'
  | 'missing_field'
  | 'invalid_field'
  | 'invalid_headers'
  | 'payload_too_large'
  | 'invalid_payload'
  | 'payload_too_deep'
  | 'duplicate_field'

/**
 * A stream entry (untrusted input) that is not a valid event, or a payload that
 * does not match a codec. Never retried: the message goes to the dead letter queue.
 */
export class DecodeError extends EventSystemError {
  constructor(readonly reason: DecodeReason, message: string, options?: { cause?: unknown }) {
    super('DECODE_FAILED', `${reason}: ${message}`, options)
  }
}

/** One invalid configuration value. `value` is already masked when it is a secret. */
export interface ConfigIssue {
  readonly variable: string
  readonly value: string
  readonly message: string
}

/** Invalid configuration: lists every invalid variable at once, secrets masked. */
export class ConfigError extends EventSystemError {
  constructor(readonly issues: readonly ConfigIssue[]) {
    super(
      'INVALID_CONFIG',
      `invalid configuration: ${issues.map((i) => `${i.variable}=${i.value} (${i.message})`).join('; ')}`,
    )
  }
}

/** A message not settled within `consumerTimeout`: counted as a failed attempt. */
export class ConsumerTimeoutError extends EventSystemError {
  constructor(readonly streamId: string, readonly timeoutMs: number) {
    super('CONSUMER_TIMEOUT', `message ${streamId} was not settled within ${timeoutMs} ms`)
  }
}

/** A storage operation failed (connection lost, command error). Never carries command arguments. */
export class BackendError extends EventSystemError {
  constructor(message: string, options?: { cause?: unknown }, code = 'BACKEND_ERROR') {
    super(code, message, options)
  }
}

/** An operation on a closed event manager, publisher or subscription. */
export class ClosedError extends EventSystemError {
  constructor(what: string) {
    super('CLOSED', `${what} is closed`)
  }
}

/** A dead letter or delayed entry that does not exist. */
export class NotFoundError extends EventSystemError {
  constructor(what: string) {
    super('NOT_FOUND', `${what} not found`)
  }
}

/** True for errors that no retry can fix (bad input): they go straight to the dead letter queue. */
export const isPermanentError = (error: unknown): boolean =>
  error instanceof DecodeError || error instanceof PayloadTooLargeError || error instanceof SerializationError

/** The consumer group (or its stream) no longer exists: the engine recreates it. */
export class GroupMissingError extends BackendError {
  constructor(topic: string, group: string) {
    super(`consumer group ${group} of topic ${topic} does not exist`, undefined, 'NO_GROUP')
  }
}

/** A second live subscription of one process asked for a consumer name (topic, group, consumer) already in use. */
export class ConsumerNameInUseError extends EventSystemError {
  constructor(readonly topic: string, readonly group: string, readonly consumer: string) {
    super('CONSUMER_NAME_IN_USE', `consumer ${consumer} of group ${group} on topic ${topic} is already in use by a live subscription in this process`)
  }
}

/** The payload of a delivered entry is not valid JSON: the entry was moved to the dead letter queue. */
export class MalformedPayloadError extends EventSystemError {
  constructor(readonly streamId: string, message: string, options?: { cause?: unknown }) {
    super('MALFORMED_PAYLOAD', `payload of entry ${streamId} cannot be decoded (moved to the dead letter queue): ${message}`, options)
  }
}

/** A payload nested deeper than `maxPayloadDepth` (`EVENT_MAX_PAYLOAD_DEPTH`, default 64). Raised before any I/O. */
export class PayloadTooDeepError extends SerializationError {
  constructor(readonly limit: number, readonly path: string) {
    super(`payload at ${path} is nested deeper than the limit of ${String(limit)} levels (EVENT_MAX_PAYLOAD_DEPTH)`)
  }
}

/**
 * A publish whose outcome is unknown: the command may have been executed but
 * its reply never arrived (a timeout, a connection reset or lost after the
 * command was sent). Publishing the same event again (same event id) within
 * the dedupe window (`EVENT_PUBLISH_DEDUPE_WINDOW`) appends it once.
 *
 * @example
 * ```ts
 * import { PublishOutcomeUnknownError } from 'rx-redis-streams'
 * const evt = newEvent('order.placed', { id: 7 })
 * try { await events.publish('orders', evt) } catch (e) {
 *   if (e instanceof PublishOutcomeUnknownError) await events.publish('orders', evt) // appended once
 * }
 * ```
 */
export class PublishOutcomeUnknownError extends BackendError {
  /** Whether a retry with the same event ids is deduplicated (the dedupe window is on). */
  readonly retrySafe: boolean

  constructor(readonly topic: string, readonly eventIds: readonly string[], options: { cause?: unknown; retrySafe: boolean }) {
    const cause = options.cause
    const why = cause instanceof Error ? ` (${cause.message})` : ''
    const advice = options.retrySafe
      ? 'publish the same event again (same id) within the dedupe window to append it at most once'
      : 'the dedupe window is off (EVENT_PUBLISH_DEDUPE_WINDOW=0): a retry may append it twice'
    super(`publish to ${topic}: outcome unknown, it may or may not have been appended${why}; ${advice}`, { cause }, 'PUBLISH_OUTCOME_UNKNOWN')
    this.retrySafe = options.retrySafe
  }
}

/**
 * Redis cannot be reached: the connection was refused, the host is unknown,
 * TLS or authentication failed, or no node answers. `kind` is `'connection'`
 * whatever the cause; `address` names where the library tried to connect (never
 * with a password); `cause` is the sanitized network or Redis error.
 *
 * @example
 * ```ts
 * import { ConnectionError } from 'rx-redis-streams'
 * try { await events.publish('orders', evt) } catch (e) {
 *   if (e instanceof ConnectionError) console.error(e.address, e.message) // 127.0.0.1:6390 connect ECONNREFUSED ...
 * }
 * ```
 */
export class ConnectionError extends BackendError {
  /** Always `'connection'`: what the engine switches on to report a consumer that cannot connect. */
  readonly kind = 'connection' as const
  constructor(readonly address: string, message: string, options?: { cause?: unknown }) {
    super(message, options, 'CONNECTION_FAILED')
  }
}

/**
 * A call to Redis that did not settle within `commandTimeout` of the call
 * (queueing and internal retries included) while the connection looked up:
 * a frozen or partitioned server. For a write, the outcome is unknown.
 *
 * @example
 * ```ts
 * import { CommandTimeoutError } from 'rx-redis-streams'
 * try { await events.stats() } catch (e) {
 *   if (e instanceof CommandTimeoutError) console.error(`no reply within ${e.timeoutMs} ms`)
 * }
 * ```
 */
export class CommandTimeoutError extends BackendError {
  /** Always `'timeout'`. */
  readonly kind = 'timeout' as const
  constructor(readonly command: string, readonly timeoutMs: number, options?: { cause?: unknown }) {
    super(`Redis ${command} got no reply within ${String(timeoutMs)} ms (commandTimeout)`, options, 'COMMAND_TIMEOUT')
  }
}

/**
 * The node the library writes to is not a master (after a failover, a
 * Sentinel switch not yet followed, or a replica given as the address): the
 * write was refused before it was sent.
 *
 * @example
 * ```ts
 * import { NotMasterError } from 'rx-redis-streams'
 * try { await events.publish('orders', evt) } catch (e) {
 *   if (e instanceof NotMasterError) console.error(e.role) // 'slave'
 * }
 * ```
 */
export class NotMasterError extends BackendError {
  readonly kind = 'connection' as const
  constructor(readonly address: string, readonly role: string) {
    super(`Redis at ${address} is not a master (ROLE ${role}): write refused`, undefined, 'NOT_MASTER')
  }
}

/**
 * `WAIT` did not see the requested number of replicas acknowledge a publish
 * within its timeout. The event *was* appended on the master; it may be lost
 * if the master fails before a replica has it.
 *
 * @example
 * ```ts
 * import { ReplicationTimeoutError } from 'rx-redis-streams'
 * try { await events.publish('orders', evt) } catch (e) {
 *   if (e instanceof ReplicationTimeoutError) console.warn(`${e.acknowledged}/${e.wanted} replicas`)
 * }
 * ```
 */
export class ReplicationTimeoutError extends BackendError {
  constructor(readonly wanted: number, readonly acknowledged: number, readonly timeoutMs: number) {
    super(`the event was appended on the master, but only ${String(acknowledged)} of ${String(wanted)} replicas acknowledged it within ${String(timeoutMs)} ms (WAIT), so it may be lost if the master fails now`, undefined, 'REPLICATION_TIMEOUT')
  }
}
