import * as t from 'io-ts'
import type { HostPort } from './types.js'

const TRUE_WORDS = new Set(['true', '1', 'yes'])
const FALSE_WORDS = new Set(['false', '0', 'no'])

/**
 * A boolean from `true`/`false`, `1`/`0` or `yes`/`no` (any case); a real
 * boolean passes through, as the options object gives it.
 *
 * ## Example
 * ```ts
 * import { BooleanInput } from 'rx-redis-streams'
 * BooleanInput.decode('YES')   // right(true)
 * BooleanInput.decode('maybe') // left
 * ```
 */
export const BooleanInput = new t.Type<boolean, string, unknown>(
  'BooleanInput',
  (u): u is boolean => typeof u === 'boolean',
  (u, c) => {
    if (typeof u === 'boolean') return t.success(u)
    if (typeof u === 'string') {
      const word = u.trim().toLowerCase()
      if (TRUE_WORDS.has(word)) return t.success(true)
      if (FALSE_WORDS.has(word)) return t.success(false)
    }
    return t.failure(u, c, 'must be true/false, 1/0 or yes/no')
  },
  String,
)

/**
 * A whole number of at least `min`, from decimal digits or from a number.
 *
 * ## Example
 * ```ts
 * import { integerAtLeast } from 'rx-redis-streams'
 * const Positive = integerAtLeast(1)
 * Positive.decode('10') // right(10)
 * Positive.decode('0')  // left: must be at least 1
 * ```
 * @param min the smallest accepted value
 * @returns a codec from `string | number` to a safe integer
 */
export function integerAtLeast(min: number): t.Type<number, string> {
  const expected = min === 0 ? 'a whole number >= 0' : min === 1 ? 'a positive whole number' : `a whole number >= ${min}`
  return new t.Type<number, string, unknown>(
    min === 1 ? 'PositiveInteger' : `IntegerAtLeast${min}`,
    (u): u is number => typeof u === 'number' && Number.isSafeInteger(u) && u >= min,
    (u, c) => {
      let n: number | undefined
      if (typeof u === 'number') n = u
      else if (typeof u === 'string' && /^\d+$/.test(u.trim())) n = Number(u.trim())
      return n !== undefined && Number.isSafeInteger(n) && n >= min ? t.success(n) : t.failure(u, c, `must be ${expected}`)
    },
    String,
  )
}

/**
 * A whole number greater than zero (`batchSize`, `maxPendingMessages`...).
 *
 * ## Example
 * ```ts
 * import { PositiveInteger } from 'rx-redis-streams'
 * PositiveInteger.decode('10') // right(10)
 * ```
 */
export const PositiveInteger = integerAtLeast(1)

/**
 * A whole number, zero included (Redis database index, `maxRetries`).
 *
 * ## Example
 * ```ts
 * import { NonNegativeInteger } from 'rx-redis-streams'
 * NonNegativeInteger.decode('0') // right(0)
 * ```
 */
export const NonNegativeInteger = integerAtLeast(0)

const DEFAULT_PORT = 6379

/**
 * Parses `host:port`, `host` (port 6379) or `[ipv6]:port`.
 *
 * ## Example
 * ```ts
 * import { parseHostPort } from 'rx-redis-streams'
 * parseHostPort('redis-1:7000') // { host: 'redis-1', port: 7000 }
 * parseHostPort('[::1]')        // { host: '::1', port: 6379 }
 * ```
 * @returns the host and port, or undefined when the text is not one
 */
export function parseHostPort(text: string): HostPort | undefined {
  const trimmed = text.trim()
  let host: string
  let portText: string | undefined
  const bracketed = /^\[([0-9A-Fa-f:.]+)\](?::(\d+))?$/.exec(trimmed)
  if (bracketed !== null) {
    host = bracketed[1] ?? ''
    portText = bracketed[2]
  } else {
    const match = /^([A-Za-z0-9._-]+)(?::(\d+))?$/.exec(trimmed)
    if (match === null) return undefined
    host = match[1] ?? ''
    portText = match[2]
  }
  const port = portText === undefined ? DEFAULT_PORT : Number(portText)
  if (host.length === 0 || !Number.isInteger(port) || port < 1 || port > 65_535) return undefined
  return { host, port }
}

/**
 * One `host:port` (the port defaults to 6379), as the legacy `EVENT_REDIS_ADDR` gives it.
 *
 * ## Example
 * ```ts
 * import { HostPortCodec } from 'rx-redis-streams'
 * HostPortCodec.decode('localhost:6380') // right({ host: 'localhost', port: 6380 })
 * ```
 */
export const HostPortCodec = new t.Type<HostPort, string, unknown>(
  'HostPort',
  (u): u is HostPort => typeof u === 'object' && u !== null && 'host' in u && 'port' in u,
  (u, c) => {
    const parsed = typeof u === 'string' ? parseHostPort(u) : undefined
    return parsed === undefined ? t.failure(u, c, 'must be host:port') : t.success(parsed)
  },
  (h) => (h.host.includes(':') ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`),
)

/**
 * A non-empty list of `host:port`, given as comma-separated text or as an array.
 *
 * ## Example
 * ```ts
 * import { HostList } from 'rx-redis-streams'
 * HostList.decode('10.0.0.1:7000,10.0.0.2:7000') // right([{ host: '10.0.0.1', port: 7000 }, ...])
 * ```
 */
export const HostList = new t.Type<HostPort[], string, unknown>(
  'HostList',
  (u): u is HostPort[] => Array.isArray(u) && u.every((h) => typeof h === 'object' && h !== null && 'host' in h && 'port' in h),
  (u, c) => {
    const parts = typeof u === 'string' ? u.split(',') : Array.isArray(u) && u.every((p) => typeof p === 'string') ? (u) : undefined
    if (parts === undefined) return t.failure(u, c, 'must be comma-separated host:port entries or an array of them')
    const hosts: HostPort[] = []
    for (const part of parts) {
      const hostPort = parseHostPort(part)
      if (hostPort === undefined) return t.failure(u, c, `${JSON.stringify(part.trim())} is not a host:port`)
      hosts.push(hostPort)
    }
    return hosts.length === 0 ? t.failure(u, c, 'must list at least one host:port') : t.success(hosts)
  },
  (hosts) => hosts.map((h) => (h.host.includes(':') ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`)).join(','),
)

/** What a `redis://`, `rediss://` or `memory://` URL says. */
export interface ParsedRedisUrl {
  readonly memory: boolean
  readonly tls: boolean
  readonly hosts: readonly HostPort[]
  readonly username?: string
  readonly password?: string
  readonly db?: number
}

function decodeComponent(text: string): string | undefined {
  if (text.length === 0) return undefined
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}

/**
 * A Redis URL: `redis://[user[:password]@]host[:port][/db]`, `rediss://...`
 * (TLS) or `memory://` (the in-process backend). Credentials are URL-decoded.
 * Failure messages never repeat the URL, which may hold a password.
 *
 * ## Example
 * ```ts
 * import { RedisUrl } from 'rx-redis-streams'
 * RedisUrl.decode('rediss://app:s%40cret@cache:6380/2')
 * // right({ memory: false, tls: true, hosts: [{ host: 'cache', port: 6380 }], username: 'app', password: 's@cret', db: 2 })
 * ```
 */
export const RedisUrl = new t.Type<ParsedRedisUrl, string, unknown>(
  'RedisUrl',
  (u): u is ParsedRedisUrl => typeof u === 'object' && u !== null && 'hosts' in u && 'tls' in u,
  (u, c) => {
    if (typeof u !== 'string') return t.failure(u, c, 'must be a redis://, rediss:// or memory:// URL')
    let url: URL
    try {
      url = new URL(u.trim())
    } catch {
      return t.failure(u, c, 'must be a valid redis://, rediss:// or memory:// URL')
    }
    if (url.protocol === 'memory:') return t.success({ memory: true, tls: false, hosts: [] })
    if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
      return t.failure(u, c, `unsupported scheme ${JSON.stringify(url.protocol)}: use redis://, rediss:// or memory://`)
    }
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname
    if (host.length === 0) return t.failure(u, c, 'must name a host')
    const port = url.port === '' ? DEFAULT_PORT : Number(url.port)
    if (port < 1 || port > 65_535) return t.failure(u, c, 'must have a port between 1 and 65535')
    const parsed: { -readonly [K in keyof ParsedRedisUrl]: ParsedRedisUrl[K] } = {
      memory: false,
      tls: url.protocol === 'rediss:',
      hosts: [{ host, port }],
    }
    const username = decodeComponent(url.username)
    const password = decodeComponent(url.password)
    if (username !== undefined) parsed.username = username
    if (password !== undefined) parsed.password = password
    const dbText = url.pathname.replace(/^\/+/, '')
    if (dbText.length > 0) {
      if (!/^\d+$/.test(dbText) || !Number.isSafeInteger(Number(dbText))) {
        return t.failure(u, c, 'must have a database index (a whole number >= 0) as its path, e.g. redis://host:6379/0')
      }
      parsed.db = Number(dbText)
    }
    return t.success(parsed)
  },
  (parsed) => {
    if (parsed.memory) return 'memory://'
    const first = parsed.hosts[0]
    const host = first === undefined ? '' : first.host.includes(':') ? `[${first.host}]:${first.port}` : `${first.host}:${first.port}`
    const auth =
      parsed.username === undefined && parsed.password === undefined
        ? ''
        : `${encodeURIComponent(parsed.username ?? '')}${parsed.password === undefined ? '' : `:${encodeURIComponent(parsed.password)}`}@`
    return `${parsed.tls ? 'rediss' : 'redis'}://${auth}${host}${parsed.db === undefined ? '' : `/${parsed.db}`}`
  },
)

const KEY_PREFIX_PATTERN = /^[^\s{}\p{Cc}]*$/u

/**
 * A key prefix: any text without whitespace, control characters or braces
 * (braces would change the Cluster hash tag of every key). May be empty.
 *
 * ## Example
 * ```ts
 * import { KeyPrefix } from 'rx-redis-streams'
 * KeyPrefix.decode('myapp:event:') // right('myapp:event:')
 * KeyPrefix.decode('{app}:')       // left
 * ```
 */
export const KeyPrefix = new t.Type<string, string, unknown>(
  'KeyPrefix',
  (u): u is string => typeof u === 'string' && KEY_PREFIX_PATTERN.test(u),
  (u, c) =>
    typeof u === 'string' && u.length <= 256 && KEY_PREFIX_PATTERN.test(u)
      ? t.success(u)
      : t.failure(u, c, 'must be at most 256 characters without whitespace, control characters, "{" or "}"'),
  t.identity,
)

/**
 * The layout new entries are written in (`EVENT_WIRE_FORMAT`): `compact` (the
 * default: `meta` + `payload`, read by readers of this version and later
 * only) or `fields` (one field per part, what every reader of every release
 * reads: keep it while consumers of an older release still read the topic).
 * Case and surrounding spaces are ignored.
 *
 * ## Example
 * ```ts
 * WireFormatInput.decode('compact') // right('compact')
 * ```
 */
export const WireFormatInput = new t.Type<'fields' | 'compact', string, unknown>(
  'WireFormat',
  (u): u is 'fields' | 'compact' => u === 'fields' || u === 'compact',
  (u, c) => {
    const v = typeof u === 'string' ? u.trim().toLowerCase() : u
    return v === 'fields' || v === 'compact' ? t.success(v) : t.failure(u, c, 'must be "fields" or "compact"')
  },
  t.identity,
)

/**
 * A non-empty string without control characters (user names, the Sentinel master name).
 *
 * ## Example
 * ```ts
 * import { NonEmptyString } from 'rx-redis-streams'
 * NonEmptyString.decode('mymaster') // right('mymaster')
 * ```
 */
export const NonEmptyString = new t.Type<string, string, unknown>(
  'NonEmptyString',
  (u): u is string => typeof u === 'string' && u.length > 0,
  (u, c) => (typeof u === 'string' && u.length > 0 && !/\p{Cc}/u.test(u) ? t.success(u) : t.failure(u, c, 'must be a non-empty string')),
  t.identity,
)

/**
 * A password: any non-empty string. Its failure message never repeats it.
 *
 * ## Example
 * ```ts
 * import { Password } from 'rx-redis-streams'
 * Password.decode('s3cret') // right('s3cret')
 * ```
 */
export const Password = new t.Type<string, string, unknown>(
  'Password',
  (u): u is string => typeof u === 'string' && u.length > 0,
  (u, c) => (typeof u === 'string' && u.length > 0 ? t.success(u) : t.failure(u, c, 'must be a non-empty string')),
  t.identity,
)
