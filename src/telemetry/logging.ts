/**
 * Logging with pino: a logger factory that never writes a password, the
 * redaction the event manager adds to any logger it is given, and the fields
 * every line about a message carries.
 */
import { pino, stdSerializers, symbols, type DestinationStream, type LoggerOptions } from 'pino'
import { MASK, maskUrl, redactSecrets } from '../config/secrets.js'
import type { Event } from '../event.js'
import type { Logger } from '../logger.js'

/** Credentials in any URL-looking text: `scheme://user:password@`. Greedy up to the last `@` of the token. */
const URL_CREDENTIALS = /\b([a-z][a-z0-9+.-]*:\/\/[^\s"'/:@]*:)[^\s"']*@/gi

/**
 * Masks what must never be logged in a text: the password of any URL
 * (`redis://user:***@host`) and every given secret.
 *
 * @example
 * ```ts
 * import { scrubText } from 'rx-redis-streams'
 * scrubText('connect redis://app:s3cret@cache:6379 failed') // 'connect redis://app:***@cache:6379 failed'
 * ```
 * @param text any text
 * @param secrets values to mask wherever they appear
 * @returns the text without credentials
 */
export function scrubText(text: string, secrets: readonly (string | undefined)[] = []): string {
  const masked = text.includes('://') ? text.replace(URL_CREDENTIALS, `$1${MASK}@`) : text
  return secrets.length === 0 ? masked : redactSecrets(masked, secrets)
}

const MAX_SCRUB_DEPTH = 6

const isPlainObject = (value: object): boolean => {
  const proto: unknown = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

/**
 * Scrubs the strings of plain objects and arrays, copying only what changes.
 * Errors and class instances are left to their serializers.
 */
function scrubValue(value: unknown, secrets: readonly (string | undefined)[], depth: number): unknown {
  if (typeof value === 'string') return scrubText(value, secrets)
  if (value === null || typeof value !== 'object' || depth > MAX_SCRUB_DEPTH) return value
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined
    value.forEach((v: unknown, i) => {
      const scrubbed = scrubValue(v, secrets, depth + 1)
      if (scrubbed !== v) (copy ??= [...(value as unknown[])])[i] = scrubbed
    })
    return copy ?? value
  }
  if (!isPlainObject(value)) return value
  let copy: Record<string, unknown> | undefined
  for (const key of Object.keys(value)) {
    const v = (value as Record<string, unknown>)[key]
    const scrubbed = scrubValue(v, secrets, depth + 1)
    if (scrubbed !== v) (copy ??= { ...(value as Record<string, unknown>) })[key] = scrubbed
  }
  return copy ?? value
}

/** Keys whose values are secrets: always masked whole. */
const SECRET_KEYS: ReadonlySet<string> = new Set(['password', 'redisPassword', 'authorization'])

/**
 * Keys whose values are credentials, or URLs that may hold some, wherever they appear (two levels deep).
 *
 * @example
 * ```ts
 * pino({ redact: { paths: [...REDACTED_PATHS, 'apiKey'], censor: '***' } })
 * ```
 */
export const REDACTED_PATHS: readonly string[] = [
  'password',
  'redisPassword',
  'url',
  'redisUrl',
  'authorization',
  '*.password',
  '*.redisPassword',
  '*.url',
  '*.redisUrl',
  '*.authorization',
  'config.redis.password',
  'options.redisUrl',
  'options.redisPassword',
]

/** A secret is masked whole; a URL keeps everything but its password. */
const censor = (value: unknown, path: string[]): unknown => {
  const key = path[path.length - 1] ?? ''
  if (SECRET_KEYS.has(key) || typeof value !== 'string') return MASK
  return value.includes('://') ? maskUrl(value) : value
}

/** The `err` serializer of pino, with credentials removed from messages, stacks and properties. */
function errorSerializer(secrets: readonly (string | undefined)[]): (error: unknown) => unknown {
  return (error) => {
    const serialized: unknown = stdSerializers.err(error as Error)
    // The serialized error's prototype is pino's: copy its own fields into a plain object to scrub them.
    return serialized !== null && typeof serialized === 'object' ? scrubValue({ ...serialized }, secrets, 0) : scrubValue(serialized, secrets, 0)
  }
}

/**
 * Options of {@link createLogger}: every pino option, plus the secrets to mask and where to write.
 *
 * @example
 * ```ts
 * createLogger({ level: 'debug', secrets: [process.env.API_TOKEN ?? ''], destination: pino.destination('/var/log/app.log') })
 * ```
 */
export interface CreateLoggerOptions extends LoggerOptions {
  /** Values masked wherever they appear in a line (the event manager adds the Redis password itself). */
  readonly secrets?: readonly string[]
  /** Where lines go; default stdout. */
  readonly destination?: DestinationStream
}

/**
 * A pino logger that never writes credentials: URL passwords are masked in
 * every line, `password`/`url`-like keys are redacted, errors are serialized
 * without secrets. Level `info` unless given (`LOG_LEVEL` is not read).
 *
 * ## Example
 * ```ts
 * import { createEventManager, createLogger } from 'rx-redis-streams'
 * const logger = createLogger({ level: 'debug' })
 * const events = createEventManager({ logger })
 * ```
 * @param options pino options, `secrets` and `destination`
 * @returns a pino logger
 */
export function createLogger(options: CreateLoggerOptions = {}): Logger {
  const { secrets = [], destination, redact, serializers, hooks, ...rest } = options
  const userWrite = hooks?.streamWrite
  const pinoOptions: LoggerOptions = {
    level: 'info',
    ...rest,
    redact: redact ?? { paths: [...REDACTED_PATHS], censor },
    serializers: { err: errorSerializer(secrets), ...serializers },
    hooks: {
      ...hooks,
      // The last line of defence: whatever a caller put into a message or a field.
      streamWrite: (line: string) => scrubText(userWrite === undefined ? line : userWrite(line), secrets),
    },
  }
  return destination === undefined ? pino(pinoOptions) : pino(pinoOptions, destination)
}

/**
 * A child of any pino logger with the library's redaction: credential keys
 * redacted, URL passwords and the given secrets removed from every string
 * field and from serialized errors. The event manager wraps the logger it is
 * given with it.
 *
 * @example
 * ```ts
 * const safe = redactingLogger(pino(), [config.redis.password])
 * safe.error({ err }, 'connect failed')  // no password, whatever the error says
 * ```
 */
export function redactingLogger(logger: Logger, secrets: readonly (string | undefined)[]): Logger {
  const known = secrets.filter((s): s is string => s !== undefined && s.length > 0)
  // A child's log formatter replaces its parent's: run the parent's first.
  const parentFormatters = (logger as unknown as Record<symbol, { log?: (object: Record<string, unknown>) => Record<string, unknown> } | undefined>)[
    symbols.formattersSym
  ]
  const parentLog = parentFormatters?.log
  return logger.child(
    {},
    {
      redact: { paths: [...REDACTED_PATHS], censor },
      serializers: { err: errorSerializer(known) },
      formatters: {
        // Every string field of every line: a URL password or a known secret may hide in any of them.
        log: (object) => scrubValue(parentLog === undefined ? object : parentLog(object as Record<string, unknown>), known, 0) as Record<string, unknown>,
      },
    },
  )
}

/**
 * The fields of every log line about one message.
 *
 * @example
 * ```ts
 * const fields: MessageLogFields = messageLogFields(msg)
 * logger.info(fields, 'charged')
 * ```
 */
export interface MessageLogFields {
  readonly topic: string
  readonly group: string
  readonly consumer: string
  readonly streamId: string
  readonly eventId: string
  readonly eventName: string
  /** The event's correlation id, else its id (what events published while handling it inherit). */
  readonly correlationId: string
}

/**
 * The fields that identify a message in a log line: topic, group, consumer,
 * stream id, event id and name, correlation id.
 *
 * @example
 * ```ts
 * import { messageLogFields } from 'rx-redis-streams'
 * logger.warn({ ...messageLogFields(msg), err }, 'payment failed')
 * ```
 */
export function messageLogFields(message: {
  readonly topic: string
  readonly group: string
  readonly consumer: string
  readonly streamId: string
  readonly event: Pick<Event, 'id' | 'name' | 'correlationId'>
}): MessageLogFields {
  const event = message.event
  return {
    topic: message.topic,
    group: message.group,
    consumer: message.consumer,
    streamId: message.streamId,
    eventId: event.id,
    eventName: event.name,
    correlationId: event.correlationId ?? event.id,
  }
}
