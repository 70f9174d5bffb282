import { readFileSync } from 'node:fs'
import { inspect } from 'node:util'
import type * as t from 'io-ts'
import { ConfigError, type ConfigIssue } from '../errors.js'
import {
  BooleanInput,
  HostList,
  HostPortCodec,
  KeyPrefix,
  NonEmptyString,
  WireFormatInput,
  NonNegativeInteger,
  Password,
  PositiveInteger,
  RedisUrl,
  type ParsedRedisUrl,
} from './codecs.js'
import { DurationInput, PositiveDurationInput } from './duration.js'
import { MASK, maskUrl, redactSecrets } from './secrets.js'
import type { Config, HostPort, RedisConnectionConfig, RedisMode, RedisTlsConfig } from './types.js'

/**
 * The configuration as a programmatic object: camelCase names of the
 * `EVENT_*` variables. A value set here wins over its variable. Durations take
 * milliseconds or duration text (`'30s'`, `'5m'`, `'1h30m'`).
 *
 * ## Example
 * ```ts
 * import { loadConfig } from 'rx-redis-streams'
 * const config = loadConfig({ redisUrl: 'redis://localhost:6379', consumerTimeout: '10s', batchSize: 50 })
 * ```
 */
export interface ConfigOptions {
  /** `EVENT_REDIS_URL`: `redis://`, `rediss://` (TLS) or `memory://`. Wins over hosts and addr. */
  readonly redisUrl?: string | undefined
  /** `EVENT_REDIS_HOSTS`: `host:port` list (a host without a port means port 6379); two or more mean Redis Cluster. */
  readonly redisHosts?: string | readonly string[] | undefined
  /** `EVENT_REDIS_USERNAME`: ACL user (a user name in the URL wins). */
  readonly redisUsername?: string | undefined
  /** `EVENT_REDIS_PASSWORD` (a password in the URL wins). Never logged. */
  readonly redisPassword?: string | undefined
  /** `EVENT_REDIS_DB`: database index, default 0 (a `/db` in the URL wins). */
  readonly redisDb?: number | string | undefined
  /** `EVENT_REDIS_ADDR`: legacy single `host:port`. Deprecated: use `redisUrl` or `redisHosts`. */
  readonly redisAddr?: string | undefined
  /** `EVENT_REDIS_MASTER_NAME`: selects Sentinel; the hosts are then the sentinels. */
  readonly redisMasterName?: string | undefined
  /** `EVENT_REDIS_TLS_CA`: trusted CA certificate(s), as PEM text or a path to a PEM file. Turns TLS on. */
  readonly redisTlsCa?: string | undefined
  /** `EVENT_REDIS_TLS_CERT`: client certificate (mutual TLS), PEM text or a path. Turns TLS on. */
  readonly redisTlsCert?: string | undefined
  /** `EVENT_REDIS_TLS_KEY`: client private key, PEM text or a path. A secret: never logged. Turns TLS on. */
  readonly redisTlsKey?: string | undefined
  /** `EVENT_REDIS_TLS_SERVERNAME`: the name the server certificate must carry (SNI), when not the host connected to. Turns TLS on. */
  readonly redisTlsServername?: string | undefined
  /** `EVENT_REDIS_TLS_REJECT_UNAUTHORIZED`, default true; `false` accepts any server certificate (testing only). Turns TLS on. */
  readonly redisTlsRejectUnauthorized?: boolean | string | undefined
  /**
   * `EVENT_COMMAND_TIMEOUT`, default `10s`: every call that talks to Redis
   * (publish, ack, stats, DLQ...) settles within it, measured from the call,
   * queueing and internal retries included.
   */
  readonly commandTimeout?: number | string | undefined
  /**
   * `EVENT_PUBLISH_WAIT_REPLICAS`, default 0 (off): after each publish, wait
   * until this many replicas have it (`WAIT`, on a connection of its own);
   * fewer within the wait timeout reject with `ReplicationTimeoutError`.
   * Reduces what a failover can lose; does not make Redis strongly consistent.
   * In a Cluster the WAIT goes with the append, on the node of the topic.
   */
  readonly publishWaitReplicas?: number | undefined
  /** `EVENT_PUBLISH_WAIT_TIMEOUT`, default `1s`: how long a publish waits for its replicas. */
  readonly publishWaitTimeout?: number | string | undefined
  /** `EVENT_CONSUMER_TIMEOUT`, default `30s`. */
  readonly consumerTimeout?: number | string | undefined
  /** `EVENT_MAX_RETRIES`, default 3 (0 = no retry). */
  readonly maxRetries?: number | undefined
  /** `EVENT_RETRY_BACKOFF`, default `1s`. */
  readonly retryBackoff?: number | string | undefined
  /** `EVENT_DLQ_TTL`, default `24h`. */
  readonly dlqTtl?: number | string | undefined
  /** `EVENT_STALE_CONSUMER_TIMEOUT`, default `5m`. */
  readonly staleConsumerTimeout?: number | string | undefined
  /** `EVENT_BATCH_SIZE`, default 10. */
  readonly batchSize?: number | undefined
  /** `EVENT_MAX_PENDING_MESSAGES`, default 1000. */
  readonly maxPendingMessages?: number | undefined
  /** `EVENT_CLAIM_MIN_IDLE_TIME`, default `1m`. */
  readonly claimMinIdleTime?: number | string | undefined
  /** `EVENT_CLAIM_INTERVAL`, default `30s`. */
  readonly claimInterval?: number | string | undefined
  /** `EVENT_DELAYED_QUEUE_ENABLED`, default true. */
  readonly delayedQueueEnabled?: boolean | undefined
  /** `EVENT_DELAYED_QUEUE_CHECK_INTERVAL`, default `1s`. */
  readonly delayedQueueCheckInterval?: number | string | undefined
  /** `EVENT_KEY_PREFIX`, default `event:`. */
  readonly keyPrefix?: string | undefined
  /** `EVENT_MAX_PAYLOAD_BYTES`, default 1 MiB. */
  readonly maxPayloadBytes?: number | undefined
  /** `EVENT_MAX_PAYLOAD_DEPTH`, default 64: deepest nesting of a payload, on publish and on read. */
  readonly maxPayloadDepth?: number | undefined
  /** `EVENT_PUBLISH_DEDUPE_WINDOW`, default `5m`: a publish retried with the same event id within it is appended once (`0` = off). */
  readonly publishDedupeWindow?: number | string | undefined
  /** `EVENT_STREAM_MAX_LEN`: approximate MAXLEN of topic streams; unbounded when unset. */
  readonly streamMaxLen?: number | undefined
  /**
   * `EVENT_WIRE_FORMAT`, default `compact`: the layout new entries are written
   * in. `compact` (`meta` + `payload`) is cheaper to write and read; `fields`
   * (one field per part: `id`, `name`, `ts`, `headers`, `payload`) is what
   * every version reads, older releases included. This version reads both,
   * mixed in one stream. Rolling upgrade: set `fields` until every consumer
   * (and CLI, DLQ tool, promoter) of the topic runs this version or later,
   * then remove it; readers first, then writers.
   */
  readonly wireFormat?: 'fields' | 'compact' | undefined
}

/**
 * Where deprecation warnings go: any pino logger fits.
 *
 * ## Example
 * ```ts
 * import pino from 'pino'
 * import { loadConfig } from 'rx-redis-streams'
 * loadConfig({}, process.env, pino())
 * ```
 */
export interface ConfigLogger {
  warn(obj: object, msg?: string): void
}

/**
 * The default Redis when no URL, hosts or address is configured.
 *
 * ## Example
 * ```ts
 * import { DEFAULT_REDIS_URL, loadConfig } from 'rx-redis-streams'
 * loadConfig({}, {}).redis.hosts // [{ host: '127.0.0.1', port: 6379 }], from DEFAULT_REDIS_URL
 * ```
 */
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379'

type OptionName = keyof ConfigOptions

/** One value to decode and where it came from (an option name or a variable name). */
interface Source {
  readonly name: string
  readonly raw: unknown
  readonly fromOptions: boolean
}

type ValueKind = 'plain' | 'secret' | 'url'

/** The numeric and boolean settings: config field, option, variable, codec, default. */
const SETTINGS = [
  ['consumerTimeoutMs', 'consumerTimeout', 'EVENT_CONSUMER_TIMEOUT', PositiveDurationInput, 30_000],
  ['maxRetries', 'maxRetries', 'EVENT_MAX_RETRIES', NonNegativeInteger, 3],
  ['retryBackoffMs', 'retryBackoff', 'EVENT_RETRY_BACKOFF', DurationInput, 1_000],
  ['dlqTtlMs', 'dlqTtl', 'EVENT_DLQ_TTL', PositiveDurationInput, 24 * 3_600_000],
  ['staleConsumerTimeoutMs', 'staleConsumerTimeout', 'EVENT_STALE_CONSUMER_TIMEOUT', PositiveDurationInput, 5 * 60_000],
  ['batchSize', 'batchSize', 'EVENT_BATCH_SIZE', PositiveInteger, 10],
  ['maxPendingMessages', 'maxPendingMessages', 'EVENT_MAX_PENDING_MESSAGES', PositiveInteger, 1_000],
  ['claimMinIdleTimeMs', 'claimMinIdleTime', 'EVENT_CLAIM_MIN_IDLE_TIME', PositiveDurationInput, 60_000],
  // 0 turns claiming off, as in consume().
  ['claimIntervalMs', 'claimInterval', 'EVENT_CLAIM_INTERVAL', DurationInput, 30_000],
  ['delayedQueueEnabled', 'delayedQueueEnabled', 'EVENT_DELAYED_QUEUE_ENABLED', BooleanInput, true],
  ['delayedQueueCheckIntervalMs', 'delayedQueueCheckInterval', 'EVENT_DELAYED_QUEUE_CHECK_INTERVAL', PositiveDurationInput, 1_000],
  ['keyPrefix', 'keyPrefix', 'EVENT_KEY_PREFIX', KeyPrefix, 'event:'],
  ['maxPayloadBytes', 'maxPayloadBytes', 'EVENT_MAX_PAYLOAD_BYTES', PositiveInteger, 1024 * 1024],
  ['commandTimeoutMs', 'commandTimeout', 'EVENT_COMMAND_TIMEOUT', PositiveDurationInput, 10_000],
  ['publishWaitReplicas', 'publishWaitReplicas', 'EVENT_PUBLISH_WAIT_REPLICAS', NonNegativeInteger, 0],
  ['publishWaitTimeoutMs', 'publishWaitTimeout', 'EVENT_PUBLISH_WAIT_TIMEOUT', PositiveDurationInput, 1_000],
  ['maxPayloadDepth', 'maxPayloadDepth', 'EVENT_MAX_PAYLOAD_DEPTH', PositiveInteger, 64],
  ['publishDedupeWindowMs', 'publishDedupeWindow', 'EVENT_PUBLISH_DEDUPE_WINDOW', DurationInput, 5 * 60_000],
  ['wireFormat', 'wireFormat', 'EVENT_WIRE_FORMAT', WireFormatInput, 'compact'],
] as const satisfies readonly (readonly [keyof Config, OptionName, string, t.Decoder<unknown, unknown>, unknown])[]

/**
 * The `EVENT_*` variable behind each option of {@link ConfigOptions}.
 *
 * ## Example
 * ```ts
 * import { ENV_VARIABLES } from 'rx-redis-streams'
 * ENV_VARIABLES.consumerTimeout // 'EVENT_CONSUMER_TIMEOUT'
 * ```
 */
export const ENV_VARIABLES: Readonly<Record<OptionName, string>> = Object.freeze({
  redisUrl: 'EVENT_REDIS_URL',
  redisHosts: 'EVENT_REDIS_HOSTS',
  redisUsername: 'EVENT_REDIS_USERNAME',
  redisPassword: 'EVENT_REDIS_PASSWORD',
  redisDb: 'EVENT_REDIS_DB',
  redisAddr: 'EVENT_REDIS_ADDR',
  redisMasterName: 'EVENT_REDIS_MASTER_NAME',
  redisTlsCa: 'EVENT_REDIS_TLS_CA',
  redisTlsCert: 'EVENT_REDIS_TLS_CERT',
  redisTlsKey: 'EVENT_REDIS_TLS_KEY',
  redisTlsServername: 'EVENT_REDIS_TLS_SERVERNAME',
  redisTlsRejectUnauthorized: 'EVENT_REDIS_TLS_REJECT_UNAUTHORIZED',
  commandTimeout: 'EVENT_COMMAND_TIMEOUT',
  publishWaitReplicas: 'EVENT_PUBLISH_WAIT_REPLICAS',
  publishWaitTimeout: 'EVENT_PUBLISH_WAIT_TIMEOUT',
  consumerTimeout: 'EVENT_CONSUMER_TIMEOUT',
  maxRetries: 'EVENT_MAX_RETRIES',
  retryBackoff: 'EVENT_RETRY_BACKOFF',
  dlqTtl: 'EVENT_DLQ_TTL',
  staleConsumerTimeout: 'EVENT_STALE_CONSUMER_TIMEOUT',
  batchSize: 'EVENT_BATCH_SIZE',
  maxPendingMessages: 'EVENT_MAX_PENDING_MESSAGES',
  claimMinIdleTime: 'EVENT_CLAIM_MIN_IDLE_TIME',
  claimInterval: 'EVENT_CLAIM_INTERVAL',
  delayedQueueEnabled: 'EVENT_DELAYED_QUEUE_ENABLED',
  delayedQueueCheckInterval: 'EVENT_DELAYED_QUEUE_CHECK_INTERVAL',
  keyPrefix: 'EVENT_KEY_PREFIX',
  maxPayloadBytes: 'EVENT_MAX_PAYLOAD_BYTES',
  maxPayloadDepth: 'EVENT_MAX_PAYLOAD_DEPTH',
  publishDedupeWindow: 'EVENT_PUBLISH_DEDUPE_WINDOW',
  wireFormat: 'EVENT_WIRE_FORMAT',
  streamMaxLen: 'EVENT_STREAM_MAX_LEN',
})

/** Options that are free text and may be left empty to mean "not set" (`EVENT_REDIS_URL=` is no URL). */
const EMPTY_MEANS_UNSET: ReadonlySet<OptionName> = new Set([
  'redisUrl',
  'redisHosts',
  'redisAddr',
  'redisUsername',
  'redisPassword',
  'redisMasterName',
  'redisTlsCa',
  'redisTlsCert',
  'redisTlsKey',
  'redisTlsServername',
  'redisTlsRejectUnauthorized',
])

function describe(raw: unknown): string {
  if (typeof raw === 'string') return raw
  if (typeof raw === 'number' || typeof raw === 'boolean' || raw === null || raw === undefined) return String(raw)
  try {
    return JSON.stringify(raw)
  } catch {
    return Object.prototype.toString.call(raw)
  }
}

function recursiveFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key of Object.keys(value)) recursiveFreeze((value as Record<string, unknown>)[key])
  }
  return value
}

/** Decodes configuration values, collecting every issue instead of stopping at the first. */
class Decoder {
  readonly issues: ConfigIssue[] = []
  readonly secrets: string[] = []

  constructor(
    private readonly options: ConfigOptions,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  /** The option when set, else its variable when set. */
  source(option: OptionName): Source | undefined {
    const fromOptions: unknown = this.options[option]
    const emptyIsUnset = EMPTY_MEANS_UNSET.has(option)
    if (fromOptions !== undefined && !(emptyIsUnset && fromOptions === '')) {
      return { name: option, raw: fromOptions, fromOptions: true }
    }
    const variable = ENV_VARIABLES[option]
    const fromEnv = this.env[variable]
    if (fromEnv !== undefined && !(emptyIsUnset && fromEnv === '')) return { name: variable, raw: fromEnv, fromOptions: false }
    return undefined
  }

  decode<A>(codec: t.Decoder<unknown, A>, source: Source | undefined, kind: ValueKind = 'plain'): A | undefined {
    if (source === undefined) return undefined
    if (kind === 'secret' && typeof source.raw === 'string') this.secrets.push(source.raw)
    const result = codec.decode(source.raw)
    if (result._tag === 'Right') return result.right
    const messages = [...new Set(result.left.map((e) => e.message ?? `must be a ${e.context[e.context.length - 1]?.type.name ?? 'valid value'}`))]
    this.report(source, messages.join('; '), kind)
    return undefined
  }

  report(source: Source, message: string, kind: ValueKind = 'plain'): void {
    const value = kind === 'secret' ? MASK : kind === 'url' ? maskUrl(describe(source.raw)) : describe(source.raw)
    this.issues.push({ variable: source.name, value, message })
  }

  /** Issues with every known secret removed, whatever field it hid in. */
  redactedIssues(): ConfigIssue[] {
    return this.issues.map((issue) => ({
      variable: issue.variable,
      value: redactSecrets(issue.value, this.secrets),
      message: redactSecrets(issue.message, this.secrets),
    }))
  }
}

/**
 * A warning about the configuration: to the logger when one is given, else
 * through `process.emitWarning` (so that it is visible without a logger).
 */
function warn(logger: ConfigLogger | undefined, details: object, message: string, type: 'Warning' | 'DeprecationWarning' = 'Warning'): void {
  if (logger !== undefined) logger.warn(details, message)
  else process.emitWarning(message, { type, code: type === 'DeprecationWarning' ? 'RRS_DEPRECATED_CONFIG' : 'RRS_UNKNOWN_CONFIG' })
}

const PEM_BEGIN = '-----BEGIN '

/** A PEM value: the text itself when it holds a PEM block, else a path to a file holding one. */
function pemOrFile(decoder: Decoder, option: OptionName, kind: ValueKind): string | undefined {
  const source = decoder.source(option)
  // Any non-empty text (PEM spans lines): Password is that codec, and never repeats the value.
  const text = decoder.decode(Password, source, kind)
  if (text === undefined || source === undefined) return undefined
  if (text.includes(PEM_BEGIN)) {
    if (kind === 'secret') decoder.secrets.push(text)
    return text
  }
  let content: string
  try {
    content = readFileSync(text, 'utf8')
  } catch (error) {
    const code = (error as { code?: unknown }).code
    decoder.report(source, `is neither PEM text nor a readable file (${typeof code === 'string' ? code : 'unreadable'})`)
    return undefined
  }
  if (!content.includes(PEM_BEGIN)) {
    decoder.report(source, 'names a file that holds no PEM block (-----BEGIN ...)')
    return undefined
  }
  if (kind === 'secret') decoder.secrets.push(content)
  return content
}

/** `EVENT_REDIS_TLS_*`: undefined when none is set. */
function decodeTls(decoder: Decoder): RedisTlsConfig | undefined {
  const tls: { -readonly [K in keyof RedisTlsConfig]: RedisTlsConfig[K] } = {}
  const ca = pemOrFile(decoder, 'redisTlsCa', 'plain')
  const cert = pemOrFile(decoder, 'redisTlsCert', 'plain')
  const key = pemOrFile(decoder, 'redisTlsKey', 'secret')
  const servername = decoder.decode(NonEmptyString, decoder.source('redisTlsServername'))
  const rejectUnauthorized = decoder.decode(BooleanInput, decoder.source('redisTlsRejectUnauthorized'))
  if (ca !== undefined) tls.ca = ca
  if (cert !== undefined) tls.cert = cert
  if (key !== undefined) tls.key = key
  if (servername !== undefined) tls.servername = servername
  if (rejectUnauthorized !== undefined) tls.rejectUnauthorized = rejectUnauthorized
  if ((cert === undefined) !== (key === undefined)) {
    const given = decoder.source(cert === undefined ? 'redisTlsKey' : 'redisTlsCert')
    if (given !== undefined) decoder.report(given, `needs ${cert === undefined ? 'EVENT_REDIS_TLS_CERT' : 'EVENT_REDIS_TLS_KEY'} too (mutual TLS takes a certificate and its key)`, 'secret')
  }
  return Object.keys(tls).length === 0 ? undefined : tls
}

/** `EVENT_*` variables read elsewhere (not settings of {@link loadConfig}), so not unknown. */
const OTHER_KNOWN_VARIABLES: readonly string[] = []
const warnedUnknown = new Set<string>()

/** Edit distance (insertions, deletions, substitutions). */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, (previous[j - 1] ?? 0) + cost))
    }
    previous = current
  }
  return previous[b.length] ?? 0
}

/**
 * The valid variable nearest to `name` (a typo such as `EVENT_MAX_RETRY`), or
 * undefined when none is close.
 *
 * ## Example
 * ```ts
 * closestVariable('EVENT_MAX_RETRY') // 'EVENT_MAX_RETRIES'
 * ```
 */
export function closestVariable(name: string): string | undefined {
  let best: string | undefined
  let bestDistance = Infinity
  for (const known of [...Object.values(ENV_VARIABLES), ...OTHER_KNOWN_VARIABLES]) {
    const d = distance(name, known)
    if (d < bestDistance) {
      best = known
      bestDistance = d
    }
  }
  // Close enough to be a typo: a few edits, or one variable's name inside the other.
  const short = name.slice('EVENT_'.length)
  return best !== undefined && (bestDistance <= Math.max(3, Math.floor(short.length / 3)) || best.includes(short) || short.includes(best.slice(6))) ? best : undefined
}

/** Warns (once per process and name) about `EVENT_*` variables that are no setting. */
function warnUnknownVariables(env: NodeJS.ProcessEnv, logger: ConfigLogger | undefined): void {
  const known = new Set<string>([...Object.values(ENV_VARIABLES), ...OTHER_KNOWN_VARIABLES])
  for (const name of Object.keys(env)) {
    if (!name.startsWith('EVENT_') || known.has(name) || warnedUnknown.has(name)) continue
    warnedUnknown.add(name)
    const closest = closestVariable(name)
    warn(logger, { variable: name, closest }, `${name} is not a setting of rx-redis-streams and is ignored${closest === undefined ? '' : `; did you mean ${closest}?`}`)
  }
}

const warnedUnknownOptions = new Set<string>()

/**
 * Warns (once per process and name) about keys of an options object that are
 * neither settings nor one of `otherOptions` (the manager's own keys): a
 * misspelt `url` instead of `redisUrl` would otherwise connect to the default
 * location without a word. The closest valid name is suggested.
 *
 * ## Example
 * ```ts
 * warnUnknownOptions({ url: 'redis://h' }, ['logger'], logger) // "option url is not an option …; did you mean redisUrl?"
 * ```
 */
export function warnUnknownOptions(options: object, otherOptions: readonly string[], logger: ConfigLogger | undefined): void {
  const known = [...Object.keys(ENV_VARIABLES), ...otherOptions]
  for (const name of Object.keys(options)) {
    if (known.includes(name) || warnedUnknownOptions.has(name)) continue
    warnedUnknownOptions.add(name)
    let best: string | undefined
    let bestDistance = Infinity
    for (const candidate of known) {
      const d = distance(name.toLowerCase(), candidate.toLowerCase())
      if (d < bestDistance) {
        best = candidate
        bestDistance = d
      }
    }
    const lower = name.toLowerCase()
    const close = best !== undefined && (bestDistance <= Math.max(3, Math.floor(name.length / 3)) || (lower.length >= 3 && best.toLowerCase().includes(lower)))
    // A name inside a longer one (url → redisUrl) is the likelier meaning than a near spelling.
    const inside = known.find((k) => lower.length >= 3 && k.toLowerCase().endsWith(lower))
    const suggestion = inside ?? (close ? best : undefined)
    warn(logger, { option: name, closest: suggestion }, `option ${name} is not an option of rx-redis-streams and is ignored${suggestion === undefined ? '' : `; did you mean ${suggestion}?`}`)
  }
}

/** A decoded Redis location: where it came from and what it says. */
interface Location {
  readonly source: Source
  readonly hosts: readonly HostPort[]
  readonly url?: ParsedRedisUrl
}

function decodeRedis(decoder: Decoder, logger: ConfigLogger | undefined): RedisConnectionConfig | undefined {
  const urlSource = decoder.source('redisUrl')
  if (urlSource !== undefined && typeof urlSource.raw === 'string') {
    // The password inside a URL is a secret in every message, even when the URL itself is invalid.
    // Also for malformed URLs (`redis:/u:pw@h`, `redis//u:pw@h`): anything between the user's colon and the last `@`.
    const password = /^[a-z][a-z0-9+.-]*:?\/*[^:@/]*:(.*)@/i.exec(urlSource.raw)?.[1]
    if (password !== undefined && password.length > 0) {
      decoder.secrets.push(password)
      try {
        decoder.secrets.push(decodeURIComponent(password))
      } catch {
        // not URL-encoded: the raw form is enough
      }
    }
  }
  const url = decoder.decode(RedisUrl, urlSource, 'url')
  const hostsSource = decoder.source('redisHosts')
  const hosts = decoder.decode(HostList, hostsSource)
  const addrSource = decoder.source('redisAddr')
  const addr = decoder.decode(HostPortCodec, addrSource)
  const username = decoder.decode(NonEmptyString, decoder.source('redisUsername'))
  const password = decoder.decode(Password, decoder.source('redisPassword'), 'secret')
  const dbSource = decoder.source('redisDb')
  const db = decoder.decode(NonNegativeInteger, dbSource)
  const masterName = decoder.decode(NonEmptyString, decoder.source('redisMasterName'))

  if (addrSource !== undefined) {
    warn(
      logger,
      { variable: addrSource.name },
      `${addrSource.name} is deprecated: use ${addrSource.fromOptions ? 'redisUrl or redisHosts' : 'EVENT_REDIS_URL or EVENT_REDIS_HOSTS'}`,
      'DeprecationWarning',
    )
  }
  const tlsOptions = decodeTls(decoder)

  // A location given in the options object replaces the one of the environment as a whole.
  const candidates: (Location | undefined)[] = [
    url === undefined || urlSource === undefined ? undefined : { source: urlSource, hosts: url.hosts, url },
    hosts === undefined || hostsSource === undefined ? undefined : { source: hostsSource, hosts },
    addr === undefined || addrSource === undefined ? undefined : { source: addrSource, hosts: [addr] },
  ]
  const anyFromOptions = [urlSource, hostsSource, addrSource].some((s) => s?.fromOptions === true)
  const location = candidates.find((c) => c !== undefined && (!anyFromOptions || c.source.fromOptions))
  const invalidLocation = [urlSource, hostsSource, addrSource].some((s) => s !== undefined && (!anyFromOptions || s.fromOptions))
  if (location === undefined && invalidLocation) return undefined

  const parsedUrl = location?.url ?? (location === undefined ? defaultUrl() : undefined)
  if (parsedUrl?.memory === true) return { mode: 'memory', hosts: [], db: 0, tls: false }

  const chosenHosts = location?.hosts ?? parsedUrl?.hosts ?? []
  const mode: RedisMode = masterName !== undefined ? 'sentinel' : chosenHosts.length >= 2 ? 'cluster' : 'standalone'
  const effectiveDb = parsedUrl?.db ?? db ?? 0
  if (mode === 'cluster' && effectiveDb !== 0 && dbSource !== undefined) {
    decoder.report(dbSource, 'Redis Cluster has only database 0')
  }
  const redis: { -readonly [K in keyof RedisConnectionConfig]: RedisConnectionConfig[K] } = {
    mode,
    hosts: chosenHosts.map((h) => ({ host: h.host, port: h.port })),
    db: effectiveDb,
    tls: (parsedUrl?.tls ?? false) || tlsOptions !== undefined,
  }
  if (tlsOptions !== undefined) redis.tlsOptions = tlsOptions
  const effectiveUsername = parsedUrl?.username ?? username
  const effectivePassword = parsedUrl?.password ?? password
  if (effectiveUsername !== undefined) redis.username = effectiveUsername
  if (effectivePassword !== undefined) redis.password = effectivePassword
  if (masterName !== undefined) redis.masterName = masterName
  return hidePasswordFromLogs(redis)
}

/**
 * Masks the password when the connection settings are serialized (JSON, pino)
 * or inspected (`console.log`), without changing the object's own properties.
 */
function hidePasswordFromLogs(redis: RedisConnectionConfig): RedisConnectionConfig {
  if (redis.password === undefined && redis.tlsOptions?.key === undefined) return redis
  const masked = (): object => ({
    ...redis,
    ...(redis.password === undefined ? {} : { password: MASK }),
    ...(redis.tlsOptions?.key === undefined ? {} : { tlsOptions: { ...redis.tlsOptions, key: MASK } }),
  })
  Object.defineProperty(redis, 'toJSON', { value: masked, enumerable: false })
  Object.defineProperty(redis, inspect.custom, { value: masked, enumerable: false })
  return redis
}

function defaultUrl(): ParsedRedisUrl {
  const parsed = RedisUrl.decode(DEFAULT_REDIS_URL)
  if (parsed._tag === 'Left') throw new Error('unreachable: the default Redis URL is valid')
  return parsed.right
}

/**
 * Decodes the configuration from an options object and the `EVENT_*`
 * environment variables (an option wins over its variable; a Redis location
 * in the options replaces the environment's), applies the defaults and
 * returns it deeply frozen.
 *
 * Redis location, first one set: `EVENT_REDIS_URL` > `EVENT_REDIS_HOSTS`
 * (with `EVENT_REDIS_USERNAME`, `EVENT_REDIS_PASSWORD`, `EVENT_REDIS_DB`) >
 * legacy `EVENT_REDIS_ADDR` (a deprecation warning goes to `logger.warn`) >
 * `redis://127.0.0.1:6379`. Two or more hosts select Redis Cluster,
 * `EVENT_REDIS_MASTER_NAME` selects Sentinel, `memory://` the in-process backend.
 *
 * ## Example
 * ```ts
 * import { loadConfig } from 'rx-redis-streams'
 * // EVENT_REDIS_URL=rediss://app:s3cret@cache:6380/1 EVENT_CONSUMER_TIMEOUT=10s
 * const config = loadConfig({ batchSize: 50 })
 * config.redis.tls          // true
 * config.consumerTimeoutMs  // 10000
 * ```
 * @param options programmatic settings, winning over the environment
 * @param env the environment to read `EVENT_*` variables from
 * @param logger receives the warnings: `EVENT_REDIS_ADDR` is deprecated, an
 *   unknown `EVENT_*` variable (naming the closest valid one). Without one they
 *   go to `process.emitWarning`.
 * @returns the frozen configuration
 * @throws {ConfigError} listing every invalid value at once, by name, secrets masked
 */
export function loadConfig(options: ConfigOptions = {}, env: NodeJS.ProcessEnv = process.env, logger?: ConfigLogger): Config {
  const decoder = new Decoder(options, env)
  warnUnknownVariables(env, logger)
  const redis = decodeRedis(decoder, logger)
  const config: Record<string, unknown> = { redis }
  for (const [field, option, , codec, fallback] of SETTINGS) {
    const anyCodec: t.Decoder<unknown, unknown> = codec
    config[field] = decoder.decode(anyCodec, decoder.source(option)) ?? fallback
  }
  const streamMaxLen = decoder.decode(PositiveInteger, decoder.source('streamMaxLen'))
  if (streamMaxLen !== undefined) config['streamMaxLen'] = streamMaxLen
  if (decoder.issues.length > 0 || redis === undefined) throw new ConfigError(decoder.redactedIssues())
  return recursiveFreeze(config as unknown as Config)
}
