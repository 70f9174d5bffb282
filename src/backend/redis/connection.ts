/**
 * ioredis clients built from a {@link Config}: standalone, Cluster or Sentinel,
 * and the one place where ioredis errors are made safe to leave the library.
 */
import { Cluster, Redis, type RedisOptions } from 'ioredis'
import { BackendError, ConfigError } from '../../errors.js'
import { redactSecrets } from '../../config/secrets.js'
import type { Config } from '../../config/types.js'

/**
 * An ioredis client: standalone or Sentinel (`Redis`), or `Cluster`.
 *
 * ## Example
 * ```ts
 * import type { RedisClient } from 'rx-redis-streams'
 * const length = async (client: RedisClient, key: string) => client.xlen(key)
 * ```
 */
export type RedisClient = Redis | Cluster

/**
 * Options of {@link createRedisClient} and {@link createBlockingClient}.
 *
 * ## Example
 * ```ts
 * import { createRedisClient, loadConfig } from 'rx-redis-streams'
 * const client = createRedisClient(loadConfig(), { name: 'orders-api', lazyConnect: true })
 * ```
 */
export interface RedisClientOptions {
  /** Connection name shown by `CLIENT LIST` (`CLIENT SETNAME`). */
  readonly name?: string | undefined
  /** Connect on the first command (or `connect()`) instead of at once. */
  readonly lazyConnect?: boolean | undefined
  /**
   * Receives connection errors (already sanitized). ioredis reports them as
   * `error` events; without a listener it would print them. Default: ignored,
   * since every failed command rejects anyway.
   */
  readonly onError?: ((error: BackendError) => void) | undefined
  /**
   * A command without a reply after this many ms rejects (a frozen server must
   * not hang a publish or an ack). Default 10 s for {@link createRedisClient};
   * none for {@link createBlockingClient}, whose reads are bounded by the engine.
   */
  readonly commandTimeout?: number | undefined
}

/** The default bound of one non-blocking command. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 10_000

const RETRY_BASE_MS = 50
const RETRY_CAP_MS = 2_000

/**
 * Reconnection delay: capped exponential backoff (50 ms doubling up to 2 s)
 * with up to 20 % jitter, so that many clients do not reconnect in step.
 *
 * ## Example
 * ```ts
 * import { reconnectDelay } from 'rx-redis-streams'
 * reconnectDelay(1)  // about 50
 * reconnectDelay(10) // about 2000
 * ```
 * @param attempt the reconnection attempt, from 1
 * @returns the delay in milliseconds
 */
export function reconnectDelay(attempt: number): number {
  const base = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** Math.max(0, Math.min(attempt - 1, 16)))
  return Math.round(base * (1 + Math.random() * 0.2))
}

function assertRedisMode(config: Config): void {
  if (config.redis.mode === 'memory') {
    throw new ConfigError([
      { variable: 'EVENT_REDIS_URL', value: 'memory://', message: 'selects the in-memory backend: there is no Redis to connect to' },
    ])
  }
}

/** Settings shared by every connection to one deployment (auth, TLS, naming). */
function connectionOptions(config: Config, options: RedisClientOptions): RedisOptions {
  const { redis } = config
  const common: RedisOptions = {
    retryStrategy: reconnectDelay,
    // A closed connection must not hold commands forever: keep ioredis' default
    // `maxRetriesPerRequest`, so they fail with an error rather than hang.
  }
  if (redis.username !== undefined) common.username = redis.username
  if (redis.password !== undefined) common.password = redis.password
  if (redis.tls) common.tls = {}
  if (options.name !== undefined) common.connectionName = options.name
  if (options.lazyConnect !== undefined) common.lazyConnect = options.lazyConnect
  if (options.commandTimeout !== undefined) common.commandTimeout = options.commandTimeout
  return common
}

function attachErrorListener(client: RedisClient, config: Config, options: RedisClientOptions): RedisClient {
  const onError = options.onError
  client.on('error', (error: unknown) => {
    if (onError !== undefined) onError(sanitizeRedisError(error, config))
  })
  return client
}

function build(config: Config, options: RedisClientOptions, autoPipelining: boolean): RedisClient {
  assertRedisMode(config)
  const { redis } = config
  const common = connectionOptions(config, options)
  switch (redis.mode) {
    case 'cluster': {
      const { retryStrategy: _perNodeRetry, lazyConnect, ...nodeOptions } = common
      return new Cluster(
        redis.hosts.map((h) => ({ host: h.host, port: h.port })),
        {
          // RESP2-shaped replies whatever the protocol, as the adapter reads them.
          redisOptions: { ...nodeOptions, replyMapping: 'legacy' },
          clusterRetryStrategy: reconnectDelay,
          enableAutoPipelining: autoPipelining,
          ...(lazyConnect === undefined ? {} : { lazyConnect }),
        },
      )
    }
    case 'sentinel':
      return new Redis({
        ...common,
        replyMapping: 'legacy',
        db: redis.db,
        sentinels: redis.hosts.map((h) => ({ host: h.host, port: h.port })),
        name: redis.masterName ?? 'mymaster',
        enableAutoPipelining: autoPipelining,
        ...(redis.tls ? { enableTLSForSentinelMode: true } : {}),
      })
    default: {
      const host = redis.hosts[0] ?? { host: '127.0.0.1', port: 6379 }
      return new Redis({
        ...common,
        replyMapping: 'legacy',
        host: host.host,
        port: host.port,
        db: redis.db,
        enableAutoPipelining: autoPipelining,
      })
    }
  }
}

/**
 * The main client of a deployment: standalone (with `db`, ACL user, password,
 * `tls` for `rediss://`), Cluster (seed nodes) or Sentinel (`masterName`),
 * with autopipelining and capped exponential reconnection. Commands fail when
 * the connection cannot be re-established rather than wait forever.
 *
 * ## Example
 * ```ts
 * import { createRedisClient, loadConfig } from 'rx-redis-streams'
 * const client = createRedisClient(loadConfig({ redisUrl: 'redis://localhost:6379' }))
 * await client.ping()
 * await client.quit()
 * ```
 * @param config the decoded configuration (not `memory://`)
 * @param options connection name, lazy connect, error listener
 * @returns an ioredis `Redis` or `Cluster`
 * @throws {ConfigError} when the configuration selects the in-memory backend
 */
export function createRedisClient(config: Config, options: RedisClientOptions = {}): RedisClient {
  const withTimeout = { commandTimeout: DEFAULT_COMMAND_TIMEOUT_MS, ...options }
  return attachErrorListener(build(config, withTimeout, true), config, withTimeout)
}

/**
 * A dedicated connection with the same settings as {@link createRedisClient},
 * for blocking reads (`XREADGROUP BLOCK`), so that they never delay other
 * commands. No autopipelining: nothing else shares it. For Cluster, a new
 * `Cluster`.
 *
 * ## Example
 * ```ts
 * import { createBlockingClient, loadConfig } from 'rx-redis-streams'
 * const reader = createBlockingClient(loadConfig(), { name: 'orders-reader' })
 * const reply = await reader.xreadgroup('GROUP', 'g', 'c', 'COUNT', 10, 'BLOCK', 5000, 'STREAMS', key, '>')
 * ```
 * @param config the decoded configuration (not `memory://`)
 * @param options connection name, lazy connect, error listener
 * @returns a new ioredis `Redis` or `Cluster`
 * @throws {ConfigError} when the configuration selects the in-memory backend
 */
export function createBlockingClient(config: Config, options: RedisClientOptions = {}): RedisClient {
  return attachErrorListener(build(config, options, false), config, options)
}

/** Properties of Node and ioredis errors that are safe to keep (no arguments, no secrets). */
const SAFE_PROPERTIES = ['code', 'errno', 'syscall', 'address', 'port'] as const
const MAX_CAUSE_DEPTH = 3

function commandName(error: object): string | undefined {
  const command = (error as { command?: unknown }).command
  if (command === null || typeof command !== 'object') return undefined
  const name = (command as { name?: unknown }).name
  return typeof name === 'string' && name.length > 0 ? name.toUpperCase() : undefined
}

/** A copy of an error with only safe, redacted fields: no `command`, no `args`, no password. */
function sanitizeCause(error: unknown, secrets: readonly (string | undefined)[], depth: number): Error {
  if (!(error instanceof Error)) return new Error(redactSecrets(String(error), secrets))
  const copy = new Error(redactSecrets(error.message, secrets))
  copy.name = error.name
  copy.stack = redactSecrets(error.stack ?? `${error.name}: ${error.message}`, secrets)
  const target = copy as unknown as Record<string, unknown>
  const source = error as unknown as Record<string, unknown>
  for (const key of SAFE_PROPERTIES) {
    const value = source[key]
    if (typeof value === 'string') target[key] = redactSecrets(value, secrets)
    else if (typeof value === 'number') target[key] = value
  }
  const command = commandName(error)
  if (command !== undefined) target['command'] = command
  if (depth < MAX_CAUSE_DEPTH) {
    if (error.cause !== undefined) copy.cause = sanitizeCause(error.cause, secrets, depth + 1)
    const last = source['lastNodeError'] // ioredis ClusterAllFailedError
    if (last !== undefined && copy.cause === undefined) copy.cause = sanitizeCause(last, secrets, depth + 1)
  }
  return copy
}

/**
 * Turns anything ioredis throws or emits into a {@link BackendError} that is
 * safe to log: the password (plain or URL-encoded) is redacted from every
 * message and stack, and ioredis' `command` (whose `args` hold AUTH
 * credentials) is dropped; only the command's name is kept.
 *
 * ## Example
 * ```ts
 * import { sanitizeRedisError } from 'rx-redis-streams'
 * try { await client.xadd(key, '*', ...fields) } catch (e) { throw sanitizeRedisError(e, config) }
 * ```
 * @param error what ioredis threw, rejected with or emitted
 * @param config the configuration holding the password to redact
 * @returns a BackendError whose `cause` is a sanitized copy of the original
 */
export function sanitizeRedisError(error: unknown, config: Config): BackendError {
  if (error instanceof BackendError) return error
  const secrets = [config.redis.password]
  const cause = sanitizeCause(error, secrets, 0)
  const command = commandName(error instanceof Error ? error : {})
  const prefix = command === undefined ? 'Redis' : `Redis ${command}`
  const hint = /^(?:WRONGPASS|NOAUTH)\b/.test(cause.message) ? ' (authentication failed: check the Redis user name and password)' : ''
  return new BackendError(`${prefix} failed: ${cause.message}${hint}`, { cause })
}
