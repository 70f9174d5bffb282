/**
 * ioredis clients built from a {@link Config}: standalone, Cluster or Sentinel,
 * every call bounded by the command timeout (measured from the call), a
 * connection that cannot be made reported as a {@link ConnectionError}, and
 * the one place where ioredis errors are made safe to leave the library.
 */
import { createHash } from 'node:crypto'
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { inspect } from 'node:util'
import { Cluster, Command, Redis, type ClusterOptions, type RedisOptions } from 'ioredis'
import type { ConnectionOptions as TlsConnectionOptions } from 'node:tls'
import { BackendError, CommandTimeoutError, ConfigError, ConnectionError, NotMasterError } from '../../errors.js'
import { MASK, redactSecrets } from '../../config/secrets.js'
import type { Config } from '../../config/types.js'
import { CONSUMER_READER_CLIENT_SETTINGS } from '../../consumer/options.js'

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
   * since every failed call rejects anyway.
   */
  readonly onError?: ((error: BackendError) => void) | undefined
  /**
   * Every call settles within this many ms *of the call* (queueing behind
   * other commands, the offline queue and reconnections included). Default
   * the configuration's `commandTimeoutMs` (10 s) for {@link createRedisClient};
   * none for {@link createBlockingClient}, whose reads are bounded by the engine.
   */
  readonly commandTimeout?: number | undefined
  /**
   * Whether this connection is the engine's blocking reader: it then takes
   * `CONSUMER_READER_CLIENT_SETTINGS` (a read cut by a reconnect fails instead
   * of being re-sent; one retry per request). Default: true for
   * {@link createBlockingClient} and {@link duplicateClient} without a
   * `commandTimeout` (reads bounded by the engine), false otherwise.
   */
  readonly reader?: boolean | undefined
}

/** The default bound of one call, from the call. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 10_000

/**
 * How long a standalone Redis may stay unreachable (a refused connection, an
 * unknown host, a TLS or authentication failure) before waiting calls reject
 * with the {@link ConnectionError}, and new ones at once: long enough to ride
 * out a restart, short enough for a clear error within about 2 s.
 */
export const CONNECT_FAIL_FAST_MS = 1_500

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

/** Node TLS options from the configuration (`rediss://`, `EVENT_REDIS_TLS_*`). */
function tlsOptions(config: Config): TlsConnectionOptions | undefined {
  const { redis } = config
  if (!redis.tls) return undefined
  const given = redis.tlsOptions
  const tls: TlsConnectionOptions = {}
  if (given?.ca !== undefined) tls.ca = given.ca
  if (given?.cert !== undefined) tls.cert = given.cert
  if (given?.key !== undefined) tls.key = given.key
  if (given?.servername !== undefined) tls.servername = given.servername
  if (given?.rejectUnauthorized !== undefined) tls.rejectUnauthorized = given.rejectUnauthorized
  return tls
}

/** Settings shared by every connection to one deployment (auth, TLS, naming). */
function connectionOptions(config: Config, options: RedisClientOptions): RedisOptions {
  const { redis } = config
  const common: RedisOptions = {
    retryStrategy: reconnectDelay,
    // A closed connection must not hold commands forever: keep ioredis' default
    // `maxRetriesPerRequest`, so they fail with an error rather than hang. The
    // bound of each call is ours (see `bounded`), measured from the call.
  }
  if (redis.username !== undefined) common.username = redis.username
  if (redis.password !== undefined) common.password = redis.password
  const tls = tlsOptions(config)
  if (tls !== undefined) common.tls = tls
  if (options.name !== undefined) common.connectionName = options.name
  if (options.lazyConnect !== undefined) common.lazyConnect = options.lazyConnect
  return common
}

/** Where the client connects, for messages: never credentials. */
export function describeAddress(config: Config): string {
  const { redis } = config
  const hosts = redis.hosts.map((h) => (h.host.includes(':') ? `[${h.host}]:${String(h.port)}` : `${h.host}:${String(h.port)}`)).join(',')
  switch (redis.mode) {
    case 'sentinel':
      return `sentinels ${hosts} (master ${redis.masterName ?? 'mymaster'})`
    case 'cluster':
      return `cluster ${hosts}`
    default:
      return hosts.length > 0 ? hosts : '127.0.0.1:6379'
  }
}

function build(config: Config, options: RedisClientOptions, autoPipelining: boolean, extra: Partial<RedisOptions> = {}): RedisClient {
  assertRedisMode(config)
  const { redis } = config
  const common = { ...connectionOptions(config, options), ...extra }
  switch (redis.mode) {
    case 'cluster': {
      const { retryStrategy: _perNodeRetry, lazyConnect, ...nodeOptions } = common
      const clusterOptions: ClusterOptions & { redisOptions: RedisOptions & { replyMapping: 'legacy' } } = {
        // RESP2-shaped replies whatever the protocol, as the adapter reads them.
        redisOptions: { ...nodeOptions, replyMapping: 'legacy' },
        clusterRetryStrategy: reconnectDelay,
        enableAutoPipelining: autoPipelining,
        // Follow MOVED/ASK and failovers inside the call's bound: many quick redirections, short pauses.
        maxRedirections: 64,
        retryDelayOnFailover: 100,
        retryDelayOnClusterDown: 100,
        retryDelayOnTryAgain: 100,
        ...(lazyConnect === undefined ? {} : { lazyConnect }),
      }
      return new Cluster(
        redis.hosts.map((h) => ({ host: h.host, port: h.port })),
        clusterOptions,
      )
    }
    case 'sentinel': {
      const tls = common.tls
      return new Redis({
        ...common,
        replyMapping: 'legacy',
        db: redis.db,
        sentinels: redis.hosts.map((h) => ({ host: h.host, port: h.port })),
        name: redis.masterName ?? 'mymaster',
        enableAutoPipelining: autoPipelining,
        // Subscribe to +switch-master and move at once, not only when the old master drops us.
        failoverDetector: true,
        // A node demoted under us (READONLY): reconnect, so the sentinels name the master again; the
        // refused call itself is retried within its bound (nothing ran). ioredis' ready check (INFO
        // role) keeps a new connection from reaching `ready` on a node that is not a master.
        reconnectOnError: (error: Error) => /^READONLY\b/.test(error.message),
        // Sentinels share the deployment's credentials unless configured otherwise.
        ...(redis.password === undefined ? {} : { sentinelPassword: redis.password }),
        ...(redis.username === undefined ? {} : { sentinelUsername: redis.username }),
        ...(tls === undefined ? {} : { enableTLSForSentinelMode: true, sentinelTLS: tls }),
      })
    }
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

// ---------------------------------------------------------------------------
// Connection state and bounded calls

/** What the library knows about a client's connection (see {@link connectionState}). */
export interface ConnectionState {
  /** ioredis' status: `wait`, `connecting`, `connect`, `ready`, `reconnecting`, `close`, `end`. */
  readonly status: string
  /** True while the last connection attempt failed and none has succeeded since. */
  readonly down: boolean
  /** Since when (epoch ms) it is down; undefined when up. */
  readonly downSince: number | undefined
  /** The last connection error, sanitized, as calls would reject with it. */
  readonly lastError: ConnectionError | undefined
}

interface PendingCall {
  readonly reject: (error: unknown) => void
  timer: NodeJS.Timeout | undefined
}

/** Errors that mean "this deployment cannot be reached at all", per mode. */
type FatalTest = (error: unknown) => boolean

const TLS_CODES = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ERR_TLS|ERR_SSL|HOSTNAME/

function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

/** A hint that helps a reader fix a connection error. */
function hintFor(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error)
  const code = errorCode(error) ?? ''
  if (TLS_CODES.test(code) || /certificate|self[- ]signed|wrong version number|tls|ssl/i.test(message)) {
    return ` (TLS certificate problem${code.length > 0 ? ` ${code}` : ''}: check EVENT_REDIS_TLS_CA, EVENT_REDIS_TLS_SERVERNAME and the server certificate)`
  }
  if (/^(?:WRONGPASS|NOAUTH)\b/.test(message)) return ' (authentication failed: check the Redis user name and password)'
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return ' (unknown host: check the host name)'
  if (code === 'ECONNREFUSED') return ' (nothing listens there: is Redis running, and is the port right?)'
  return ''
}

/**
 * Tracks one client's connection and bounds its calls. Standalone: once the
 * client has been unable to connect for {@link CONNECT_FAIL_FAST_MS}, waiting
 * calls reject with the connection error and new ones at once, until it
 * connects again. Sentinel and Cluster: the same only when no sentinel or no
 * node answers at all; otherwise calls wait for the new topology up to their
 * bound.
 */
class ConnectionMonitor {
  readonly pending = new Set<PendingCall>()
  down = false
  downSince: number | undefined
  lastError: ConnectionError | undefined
  #failing = false
  #graceTimer: NodeJS.Timeout | undefined
  /**
   * The last telling error (TLS, authentication...) of a connection behind
   * the client: a Cluster node, a sentinel. ioredis reports only a summary
   * for those ("Failed to refresh slots cache", "All sentinels are
   * unreachable... Last error: Connection is closed."), which drops the cause.
   */
  #innerError: unknown

  constructor(
    readonly client: RedisClient,
    readonly address: string,
    readonly secrets: readonly (string | undefined)[],
    readonly fatal: FatalTest,
    readonly failFastMs: number,
    /** Sentinel and Cluster: topology errors are retried within the bound (standalone has no other node to wait for). */
    readonly followsTopology = false,
  ) {
    client.on('error', (error: unknown) => this.#onError(error))
    client.on('ready', () => this.#onReady())
    client.on('reconnecting', () => this.#failCutCommands())
    client.on('end', () => {
      // ioredis gave up (or was closed): nothing will connect again.
      this.#onError(this.lastError?.cause ?? new Error('Connection is closed.'))
    })
    this.#watchInnerConnections()
  }

  /** Records the errors of Cluster nodes and of the sentinels ioredis asks (see {@link ConnectionMonitor.#innerError}). */
  #watchInnerConnections(): void {
    const record = (error: unknown): void => {
      if (hintFor(error) !== '') this.#innerError = error
    }
    if (this.client instanceof Cluster) {
      this.client.on('node error', record)
      // ioredis asks for the slots on a duplicate of a node's connection whose errors it ignores (a TLS failure among them).
      const watch = (node: Redis): void => {
        const duplicate = node.duplicate.bind(node)
        node.duplicate = (...args: Parameters<Redis['duplicate']>) => {
          const copy = duplicate(...args)
          copy.on('error', record)
          return copy
        }
      }
      this.client.on('+node', watch)
      for (const node of this.client.nodes()) watch(node)
      return
    }
    // ioredis' Sentinel connector makes a short-lived client per sentinel and ignores its errors.
    const connector = (this.client as unknown as { connector?: { connectToSentinel?: (...args: unknown[]) => unknown } }).connector
    const connect = connector?.connectToSentinel
    if (connector === undefined || typeof connect !== 'function') return
    connector.connectToSentinel = (...args: unknown[]) => {
      const sentinel = connect.apply(connector, args)
      if (sentinel instanceof Redis) sentinel.on('error', record)
      return sentinel
    }
  }

  get state(): ConnectionState {
    return { status: this.client.status, down: this.down, downSince: this.downSince, lastError: this.lastError }
  }

  /** True when calls should reject at once with the connection error. */
  get failing(): boolean {
    return this.#failing && this.client.status !== 'ready'
  }

  connectionError(cause?: unknown): ConnectionError {
    if (cause === undefined && this.lastError !== undefined) return this.lastError
    const raw = cause ?? new Error('no connection')
    const safe = sanitizeCause(raw, this.secrets, 0)
    const hint = hintFor(raw)
    const inner = hint === '' && this.#innerError !== undefined ? this.#innerError : undefined
    if (inner !== undefined) {
      // A summary ("Failed to refresh slots cache"): name what a node or sentinel actually said.
      const detail = sanitizeCause(inner, this.secrets, 0)
      if (safe.cause === undefined) safe.cause = detail
      return new ConnectionError(this.address, `connection to Redis at ${this.address} failed: ${safe.message} (${this.client instanceof Cluster ? 'a node' : 'a sentinel'} said: ${detail.message})${hintFor(inner)}`, { cause: safe })
    }
    return new ConnectionError(this.address, `connection to Redis at ${this.address} failed: ${safe.message}${hint}`, { cause: safe })
  }

  #onError(error: unknown): void {
    if (isReplyError(error) && !/^(?:WRONGPASS|NOAUTH|NOPERM|LOADING|MASTERDOWN)\b/.test(error instanceof Error ? error.message : '')) return
    this.lastError = this.connectionError(error)
    if (!this.fatal(error) || this.client.status === 'ready') return
    if (!this.down) {
      this.down = true
      this.downSince = Date.now()
      clearTimeout(this.#graceTimer)
      this.#graceTimer = setTimeout(() => this.#failPending(), this.failFastMs)
      this.#graceTimer.unref()
    } else if (this.#failing) {
      this.#failPending()
    }
  }

  /**
   * A client that does not re-send commands cut by a reconnect
   * (`autoResendUnfulfilledCommands: false`, the engine's reader) would leave
   * them unsettled for ever: they reject now with a connection error, so the
   * caller knows the reply was lost (the engine then re-reads its pending entries).
   */
  #failCutCommands(): void {
    if (!(this.client instanceof Redis)) return
    const c = this.client as unknown as {
      readonly options?: { readonly autoResendUnfulfilledCommands?: boolean }
      readonly prevCommandQueue?: { shift(): { readonly command: { reject(error: unknown): void } } | undefined } | null
    }
    if (c.options?.autoResendUnfulfilledCommands !== false) return
    const queue = c.prevCommandQueue
    if (queue === undefined || queue === null) return
    const error = this.connectionError(new Error('the connection closed while the command was in flight (not re-sent: its reply is lost)'))
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) item.command.reject(error)
  }

  #onReady(): void {
    this.down = false
    this.downSince = undefined
    this.#innerError = undefined
    this.#failing = false
    clearTimeout(this.#graceTimer)
  }

  /** Rejects every waiting call with the connection error and drops what ioredis holds for later. */
  #failPending(): void {
    if (!this.down || this.client.status === 'ready') return
    this.#failing = true
    const error = this.connectionError()
    for (const call of this.pending) {
      clearTimeout(call.timer)
      call.reject(error)
    }
    this.pending.clear()
    // Commands never sent must not run minutes later when Redis is back: the caller was told they failed.
    const flush = (this.client as unknown as { flushQueue?: (e: Error, o: object) => void }).flushQueue
    if (this.client instanceof Redis && typeof flush === 'function') flush.call(this.client, error, { offlineQueue: true, commandQueue: false })
  }

  /** What a call's rejection becomes: a connection error when the connection is the cause. */
  translate(error: unknown): unknown {
    if (error instanceof BackendError) return error
    if (isReplyError(error)) {
      return /^(?:WRONGPASS|NOAUTH)\b/.test(error instanceof Error ? error.message : '') ? this.connectionError(error) : error
    }
    const message = error instanceof Error ? error.message : ''
    const lost = message === 'Connection is closed.' || (error instanceof Error && error.name === 'MaxRetriesPerRequestError') || /All sentinels are unreachable|Failed to refresh slots cache|None of startup nodes is available/.test(message)
    if (this.down || lost) return this.connectionError(this.down ? undefined : error)
    return error
  }

  timeoutError(command: string, timeoutMs: number): BackendError {
    if (this.down && this.lastError !== undefined) return this.lastError
    return new CommandTimeoutError(command, timeoutMs, this.client.status === 'ready' ? undefined : { cause: this.lastError })
  }
}

function isReplyError(error: unknown): boolean {
  return error instanceof Error && error.name === 'ReplyError'
}

const monitors = new WeakMap<object, ConnectionMonitor>()

/**
 * What the library knows about the connection of a client it made (or
 * wrapped): status, whether it is down, the last connection error.
 *
 * ## Example
 * ```ts
 * import { connectionState } from 'rx-redis-streams'
 * connectionState(client)?.lastError?.message // 'cannot reach Redis at 127.0.0.1:6390: connect ECONNREFUSED ...'
 * ```
 * @returns undefined for a client the library does not track
 */
export function connectionState(client: RedisClient): ConnectionState | undefined {
  return monitors.get(client)?.state
}

/** Methods that are not calls to Redis: passed through untouched. */
const PASS_THROUGH = new Set<string>([
  'on', 'once', 'off', 'addListener', 'removeListener', 'removeAllListeners', 'emit', 'listeners', 'listenerCount',
  'prependListener', 'prependOnceListener', 'setMaxListeners', 'getMaxListeners', 'eventNames', 'rawListeners',
  'defineCommand', 'duplicate', 'disconnect', 'nodes', 'toString', 'valueOf', 'constructor', 'silentEmit', 'setStatus',
  'createBuiltinCommand', 'getBuiltinCommands', 'end', 'flushQueue',
])
const PIPELINES = new Set(['multi', 'pipeline'])

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === 'object' || typeof value === 'function') && typeof (value as { then?: unknown }).then === 'function'
}

/**
 * Replies that mean "not executed here, the topology is changing": a slot
 * moved or is migrating, the node is a replica now, a MULTI was discarded for
 * one of those, the cluster or master is down for a moment. Retrying them is
 * safe (nothing ran) and they must not reach users during a failover.
 */
const TOPOLOGY_ERROR = /^(?:MOVED|ASK|READONLY|EXECABORT|CLUSTERDOWN|TRYAGAIN|MASTERDOWN|LOADING)\b/
/**
 * ioredis' own rejection of an autopipeline, unsent, whose slot map changed
 * between queueing and sending (a MOVED of another call moved one of its
 * slots to another node): nothing ran, so it is retried like a redirection.
 */
const STALE_PIPELINE = /^All keys in the pipeline should belong to the same slots allocation group/
/**
 * ioredis gave up following redirections (`maxRedirections`: during an
 * election, nodes that disagree bounce a call between them quickly) and the
 * last reply was itself a redirection, so that attempt ran nowhere: the call
 * starts again, within its bound. A last error of another kind (a connection
 * closed under the call) is not retried: its outcome is unknown.
 */
const REDIRECTIONS_EXHAUSTED = /^Too many Cluster redirections\. Last error: ReplyError: (?:MOVED|ASK|READONLY|CLUSTERDOWN|TRYAGAIN)\b/
const TOPOLOGY_RETRY_MS = 100

function isTopologyError(error: unknown): boolean {
  if (!(error instanceof Error)) return false
  const message = error.message
  return TOPOLOGY_ERROR.test(message) || STALE_PIPELINE.test(message) || REDIRECTIONS_EXHAUSTED.test(message)
}

/**
 * How often a defined script's call is sent again after `NOSCRIPT` (the
 * node's script cache was flushed, or a promoted replica never had it).
 * ioredis falls back to EVAL itself for a single command, but not when it
 * re-sends a whole Cluster autopipeline after a redirection (it re-creates
 * each command's promise, dropping the fallback). Nothing ran, so sending
 * it again is safe; after a NOSCRIPT on a connection, ioredis sends the
 * script's source (EVAL) on it, so one retry normally suffices.
 */
const NOSCRIPT_RETRIES = 5

function isNoScript(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('NOSCRIPT')
}

/**
 * Runs one call under the monitor: rejects with the connection error when
 * failing, bounded by `timeoutMs` from now; a topology error (see
 * {@link TOPOLOGY_ERROR}) is retried after a short pause while the bound
 * allows, and so is `NOSCRIPT` for a defined script (`script`), at once.
 */
function boundCall(monitor: ConnectionMonitor, command: string, timeoutMs: number | undefined, run: () => unknown, script = false): unknown {
  if (monitor.failing) return Promise.reject(monitor.connectionError())
  const result = run()
  if (!isThenable(result)) return result
  const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs
  let noScriptRetries = 0
  return new Promise((resolve, reject) => {
    const call: PendingCall = { reject, timer: undefined }
    monitor.pending.add(call)
    if (timeoutMs !== undefined) {
      call.timer = setTimeout(() => {
        if (monitor.pending.delete(call)) reject(monitor.timeoutError(command, timeoutMs))
      }, timeoutMs)
    }
    const settle = (attempt: PromiseLike<unknown>): void => {
      attempt.then(
        (value) => {
          if (!monitor.pending.delete(call)) return
          clearTimeout(call.timer)
          resolve(value)
        },
        (error: unknown) => {
          if (!monitor.pending.has(call)) return
          const retry = (delayMs: number): void => {
            setTimeout(() => {
              if (!monitor.pending.has(call)) return
              try {
                const again = run()
                if (isThenable(again)) settle(again)
                else settle(Promise.resolve(again))
              } catch (thrown) {
                settle(Promise.reject(thrown instanceof Error ? thrown : new Error(String(thrown))))
              }
            }, delayMs)
          }
          if (monitor.followsTopology && isTopologyError(error) && Date.now() + TOPOLOGY_RETRY_MS < deadline) {
            retry(TOPOLOGY_RETRY_MS)
            return
          }
          if (script && isNoScript(error) && noScriptRetries < NOSCRIPT_RETRIES && Date.now() < deadline) {
            noScriptRetries++
            retry(0)
            return
          }
          monitor.pending.delete(call)
          clearTimeout(call.timer)
          // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- passes ioredis' rejection on unchanged (an Error)
          reject(monitor.translate(error))
        },
      )
    }
    settle(result)
  })
}

/**
 * A pipeline or MULTI whose `exec` is bounded like any call (chained methods
 * keep the wrapper). The queued commands are recorded, so that a retried
 * `exec` (after a topology error) replays them on a fresh pipeline.
 */
function boundPipeline(create: () => object, monitor: ConnectionMonitor, timeoutMs: number | undefined): object {
  const first = create()
  const queued: { name: string | symbol; args: unknown[] }[] = []
  let used = false
  const proxy: object = new Proxy(first, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target)
      if (typeof value !== 'function') return value
      const fn = value as (...args: unknown[]) => unknown
      if (prop === 'exec') {
        return (...args: unknown[]) =>
          boundCall(monitor, 'EXEC', timeoutMs, () => {
            if (!used) {
              used = true
              return fn.apply(target, args)
            }
            const fresh = create() as Record<string | symbol, (...a: unknown[]) => unknown>
            for (const q of queued) (fresh[q.name] as (...a: unknown[]) => unknown).apply(fresh, q.args)
            return (fresh['exec'] as (...a: unknown[]) => unknown).apply(fresh, args)
          })
      }
      return (...args: unknown[]) => {
        queued.push({ name: prop, args })
        const out = fn.apply(target, args)
        return out === target ? proxy : out
      }
    },
  })
  return proxy
}

/**
 * Wraps a client so that every call to Redis is bounded from the call and
 * its failures carry the connection error. The wrapper is the client for
 * everything else (`status`, events, `duplicate()`...).
 */
function bounded<C extends RedisClient>(client: C, monitor: ConnectionMonitor, timeoutMs: number | undefined): C {
  const wrappers = new Map<string | symbol, { fn: unknown; wrapper: unknown }>()
  const proxy = new Proxy(client, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target)
      if (typeof value !== 'function') return value
      const cached = wrappers.get(prop)
      if (cached?.fn === value) return cached.wrapper
      const fn = value as (...args: unknown[]) => unknown
      let wrapper: unknown
      if (typeof prop === 'symbol' || PASS_THROUGH.has(prop)) {
        wrapper = fn.bind(target)
      } else if (PIPELINES.has(prop)) {
        wrapper = (...args: unknown[]) => boundPipeline(() => fn.apply(target, args) as object, monitor, timeoutMs)
      } else if (prop === 'callBuffer' && target instanceof Redis) {
        // ioredis 6.0.0 drops the command name of callBuffer() on an autopipelined client (only
        // call() gets it back): send the command directly, with Buffer replies.
        wrapper = (...args: unknown[]) => {
          const [first, ...rest] = args
          const command = typeof first === 'string' ? first : String(first)
          return boundCall(monitor, command.toUpperCase(), timeoutMs, () =>
            target.sendCommand(new Command(command, rest as (string | number | Buffer)[], { replyEncoding: null })),
          )
        }
      } else if (prop === 'quit') {
        // Closing must not wait for a Redis that is not there: drop the connection instead.
        wrapper = (...args: unknown[]) => {
          if (target.status !== 'ready') {
            target.disconnect()
            return Promise.resolve('OK')
          }
          return (boundCall(monitor, 'QUIT', Math.min(timeoutMs ?? 1_000, 1_000), () => fn.apply(target, args)) as Promise<unknown>).then(undefined, () => {
            target.disconnect()
            return 'OK'
          })
        }
      } else {
        const name = prop === 'call' || prop === 'sendCommand' ? undefined : prop.toUpperCase()
        // A command made by defineCommand (the adapter's scripts): NOSCRIPT is retried (see NOSCRIPT_RETRIES).
        const script = Object.hasOwn((target as unknown as { scriptsSet?: object }).scriptsSet ?? {}, prop)
        wrapper = (...args: unknown[]) => {
          const first = args[0]
          const command = name ?? (typeof first === 'string' ? first.toUpperCase() : prop.toUpperCase())
          return boundCall(monitor, command, timeoutMs, () => fn.apply(target, args), script)
        }
      }
      wrappers.set(prop, { fn: value, wrapper })
      return wrapper
    },
  })
  monitors.set(proxy, monitor)
  boundTimeouts.set(proxy, timeoutMs)
  monitors.set(client, monitor)
  return proxy
}

// ---------------------------------------------------------------------------
// Secrets in ioredis objects

const SECRET_KEYS = ['password', 'sentinelPassword', 'auth', 'key'] as const

/** A copy for display with every secret-bearing field masked (one level into `tls`, `sentinelTLS`, `redisOptions`). */
function maskedCopy(value: object, depth = 0): object {
  const out: Record<string, unknown> = {}
  for (const [key, v] of Object.entries(value)) {
    if ((SECRET_KEYS as readonly string[]).includes(key) && v !== undefined && v !== null) out[key] = MASK
    else if (depth < 2 && v !== null && typeof v === 'object' && !Array.isArray(v) && /^(?:tls|sentinelTLS|redisOptions|natMap)$/.test(key)) out[key] = maskedCopy(v as object, depth + 1)
    else out[key] = v
  }
  return out
}

function maskOnInspect(target: unknown, show: () => object): void {
  if (target === null || typeof target !== 'object') return
  Object.defineProperty(target, inspect.custom, { value: show, enumerable: false, configurable: true, writable: true })
}

/**
 * Makes `util.inspect` (even with `showHidden`) of a client, its options, its
 * connector and its connection state print no password or TLS key.
 */
function hideSecrets(client: RedisClient, address: string): void {
  const patchRedis = (redis: Redis): void => {
    const internals = redis as unknown as { options?: object; connector?: { options?: object }; condition?: object }
    maskOnInspect(redis, () => ({ [Symbol.toStringTag]: 'Redis', status: redis.status, address, options: internals.options === undefined ? undefined : maskedCopy(internals.options) }))
    if (internals.options !== undefined) maskOnInspect(internals.options, () => maskedCopy(internals.options ?? {}))
    const connector = internals.connector
    if (connector !== undefined) {
      maskOnInspect(connector, () => ({ connector: connector.constructor.name, options: maskedCopy(connector.options ?? {}) }))
      if (connector.options !== undefined) maskOnInspect(connector.options, () => maskedCopy(connector.options ?? {}))
    }
    const patchCondition = (): void => {
      const condition = internals.condition
      if (condition !== undefined) maskOnInspect(condition, () => maskedCopy(condition))
    }
    patchCondition()
    redis.on('connect', patchCondition)
    redis.on('ready', patchCondition)
  }
  if (client instanceof Cluster) {
    const internals = client as unknown as { options?: object }
    maskOnInspect(client, () => ({ [Symbol.toStringTag]: 'Cluster', status: client.status, address, options: internals.options === undefined ? undefined : maskedCopy(internals.options) }))
    if (internals.options !== undefined) maskOnInspect(internals.options, () => maskedCopy(internals.options ?? {}))
    client.on('+node', (node: Redis) => patchRedis(node))
    for (const node of client.nodes()) patchRedis(node)
  } else {
    patchRedis(client)
  }
}

// ---------------------------------------------------------------------------
// Sentinel: writes go to the master the sentinels name

/** The bound of each call of a wrapped client (see {@link bounded}). */
const boundTimeouts = new WeakMap<object, number | undefined>()

let sentinelCheckIntervalMs = 1_000

/**
 * Sets how often (ms, default 1 000) the library asks a sentinel which node
 * is the master and moves the connections that are elsewhere. For tests,
 * which need the check to run only when they ask (`health()`).
 *
 * ## Example
 * ```ts
 * const previous = setSentinelCheckInterval(3_600_000)
 * try { await events.health() } finally { setSentinelCheckInterval(previous) }
 * ```
 * @returns the previous interval
 */
export function setSentinelCheckInterval(ms: number): number {
  const previous = sentinelCheckIntervalMs
  sentinelCheckIntervalMs = ms
  return previous
}

/** A Sentinel-managed connection found on a node other than the master the sentinels name. */
export interface StaleMaster {
  /** Where the connection was, `host:port`. */
  readonly connected: string
  /** The master the sentinels name, `host:port`. */
  readonly named: string
  /** The Sentinel master name. */
  readonly masterName: string
}

/**
 * The node a connection writes to still acts as a master, but the sentinels
 * name another one (the old master of a failover, unfrozen or cut off while
 * a replica was promoted: a dead branch). Its connections are moved.
 *
 * ## Example
 * ```ts
 * import { NotMasterError } from 'rx-redis-streams'
 * const report = await events.health() // reasons: ['Redis at 127.0.0.1:7001 still acts as master, but the sentinels name 127.0.0.1:7002 ...']
 * ```
 */
export class StaleMasterError extends NotMasterError {
  constructor(readonly stale: StaleMaster) {
    super(stale.connected, 'master')
    this.message = `Redis at ${stale.connected} still acts as master, but the sentinels name ${stale.named} as the master of ${stale.masterName}: its connections are moved there`
  }
}

interface NodeAddress {
  readonly host: string
  readonly port: number
}

const stripMapped = (host: string): string => (host.startsWith('::ffff:') ? host.slice(7) : host)

/** Where a connected client's socket goes (undefined before it is connected). */
function remoteOf(client: Redis): NodeAddress | undefined {
  const stream = (client as unknown as { stream?: { remoteAddress?: string; remotePort?: number } }).stream
  if (stream?.remoteAddress === undefined || stream.remotePort === undefined) return undefined
  return { host: stripMapped(stream.remoteAddress), port: stream.remotePort }
}

/** True when `at` (an IP and port) is the node `named` (an IP or a host name); unknown counts as the same. */
async function sameNode(at: NodeAddress, named: NodeAddress): Promise<boolean> {
  if (at.port !== named.port) return false
  if (isIP(named.host) !== 0) return stripMapped(named.host) === at.host
  try {
    const addresses = await lookup(named.host, { all: true })
    return addresses.some((a) => stripMapped(a.address) === at.host)
  } catch {
    return true
  }
}

/**
 * One per Sentinel deployment (sentinels and master name): every `interval`
 * it asks a sentinel for the master (`SENTINEL get-master-addr-by-name`, on
 * a connection of its own) and disconnects each ready connection that is on
 * another node; ioredis then reconnects through the sentinels, re-sending
 * what was in flight. A safety net under ioredis' failover detector (which
 * follows `+switch-master` but misses a switch announced while its
 * subscription was down): no round trip per publish.
 */
class SentinelMasterWatch {
  readonly clients = new Set<Redis>()
  #sentinel: Redis | undefined
  #next = 0
  #timer: NodeJS.Timeout | undefined
  #running: Promise<Map<Redis, StaleMaster>> | undefined
  /** What each client was last moved from (`connected|named`): back there after reconnecting through the sentinels, the comparison cannot tell. */
  readonly #movedFrom = new WeakMap<Redis, string>()
  /** Clients whose address cannot be compared with the sentinels' (an address translation the library does not know): never moved. */
  readonly #incomparable = new WeakSet<Redis>()

  constructor(
    readonly key: string,
    readonly options: RedisOptions,
    readonly onEmpty: () => void,
  ) {}

  add(client: Redis): void {
    this.clients.add(client)
    this.#schedule()
  }

  remove(client: Redis): void {
    this.clients.delete(client)
    if (this.clients.size > 0) return
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#drop()
    this.onEmpty()
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.clients.size === 0) return
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.check()
        .catch(() => undefined)
        .finally(() => this.#schedule())
    }, Math.round(sentinelCheckIntervalMs * (0.9 + Math.random() * 0.2)))
    this.#timer.unref()
  }

  /** Compares now (one check at a time: a caller during a check gets its result); resolves with what it moved. */
  check(): Promise<Map<Redis, StaleMaster>> {
    this.#running ??= this.#check().finally(() => {
      this.#running = undefined
      // The last client ended during the check: its sentinel connection must not outlive it.
      if (this.clients.size === 0) this.#drop()
    })
    return this.#running
  }

  async #check(): Promise<Map<Redis, StaleMaster>> {
    const moved = new Map<Redis, StaleMaster>()
    if (![...this.clients].some((c) => c.status === 'ready')) return moved
    const named = await this.#askSentinels()
    if (named === undefined) return moved
    const masterName = this.options.name ?? 'mymaster'
    for (const client of this.clients) {
      const at = client.status === 'ready' && !this.#incomparable.has(client) ? remoteOf(client) : undefined
      if (at === undefined) continue
      if (await sameNode(at, named)) {
        this.#movedFrom.delete(client)
        continue
      }
      if (client.status !== 'ready') continue
      const stale = { connected: `${at.host}:${String(at.port)}`, named: `${named.host}:${String(named.port)}`, masterName }
      const seen = `${stale.connected}|${stale.named}`
      if (this.#movedFrom.get(client) === seen) {
        // ioredis reconnected through the sentinels and came back to the same address: it is the named master
        // behind a translation (NAT, a proxy) the library cannot see. Moving it again would only cut it every second.
        this.#incomparable.add(client)
        continue
      }
      this.#movedFrom.set(client, seen)
      moved.set(client, stale)
      client.disconnect(true)
    }
    return moved
  }

  /** The master the first answering sentinel names (NAT-mapped like ioredis does); undefined when none knows. */
  async #askSentinels(): Promise<NodeAddress | undefined> {
    const sentinels = this.options.sentinels ?? []
    for (let tried = 0; tried < sentinels.length && this.clients.size > 0; tried++) {
      try {
        const reply: unknown = await this.#connection().call('SENTINEL', 'get-master-addr-by-name', this.options.name ?? 'mymaster')
        if (!Array.isArray(reply) || reply.length < 2) return undefined
        return this.#natResolve({ host: String(reply[0]), port: Number(reply[1]) })
      } catch {
        this.#drop()
      }
    }
    return undefined
  }

  #natResolve(address: NodeAddress): NodeAddress {
    const natMap = this.options.natMap as unknown
    const key = `${address.host}:${String(address.port)}`
    const mapped: unknown =
      typeof natMap === 'function' ? (natMap as (k: string) => unknown)(key) : natMap !== null && typeof natMap === 'object' ? (natMap as Record<string, unknown>)[key] : undefined
    const m = mapped as Partial<NodeAddress> | null | undefined
    return typeof m?.host === 'string' && typeof m.port === 'number' ? { host: m.host, port: m.port } : address
  }

  #connection(): Redis {
    if (this.#sentinel !== undefined) return this.#sentinel
    const sentinels = this.options.sentinels ?? []
    const at = sentinels[this.#next % Math.max(1, sentinels.length)] ?? {}
    this.#next++
    const host = at.host ?? '127.0.0.1'
    const port = at.port ?? 26379
    const tls = this.options.enableTLSForSentinelMode === true ? this.options.sentinelTLS : undefined
    const sentinel = new Redis({
      host,
      port,
      ...(this.options.sentinelUsername ? { username: this.options.sentinelUsername } : {}),
      ...(this.options.sentinelPassword ? { password: this.options.sentinelPassword } : {}),
      ...(tls === undefined ? {} : { tls }),
      lazyConnect: true,
      enableReadyCheck: false,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
      connectTimeout: 1_000,
      commandTimeout: 1_000,
      replyMapping: 'legacy',
    })
    sentinel.on('error', () => undefined)
    hideSecrets(sentinel, `sentinel ${host}:${String(port)}`)
    this.#sentinel = sentinel
    return sentinel
  }

  #drop(): void {
    this.#sentinel?.disconnect()
    this.#sentinel = undefined
  }
}

const sentinelWatches = new Map<string, SentinelMasterWatch>()
const watchOf = new WeakMap<Redis, SentinelMasterWatch>()

/** Puts a Sentinel-managed client under its deployment's {@link SentinelMasterWatch} until it ends. */
function watchSentinelMaster(client: Redis): void {
  const options = (client as unknown as { options?: RedisOptions }).options
  if (options?.sentinels === undefined || options.sentinels.length === 0 || watchOf.has(client)) return
  const key = JSON.stringify([options.name ?? 'mymaster', options.sentinels.map((s) => `${s.host ?? ''}:${String(s.port ?? '')}`), options.sentinelUsername ?? '', options.enableTLSForSentinelMode === true])
  let watch = sentinelWatches.get(key)
  if (watch === undefined) {
    watch = new SentinelMasterWatch(key, options, () => sentinelWatches.delete(key))
    sentinelWatches.set(key, watch)
  }
  watch.add(client)
  watchOf.set(client, watch)
  const found = watch
  client.once('end', () => {
    watchOf.delete(client)
    found.remove(client)
  })
}

/**
 * Checks now whether any of these clients (Sentinel-managed ones made or
 * wrapped here) is connected to a node other than the master the sentinels
 * name; such connections are moved (disconnected: ioredis reconnects through
 * the sentinels). For `health()`.
 *
 * ## Example
 * ```ts
 * const stale = await staleSentinelMaster([control, client])
 * if (stale !== undefined) throw new StaleMasterError(stale)
 * ```
 * @returns the first stale connection found, or undefined
 */
export async function staleSentinelMaster(clients: readonly RedisClient[]): Promise<StaleMaster | undefined> {
  const raw = clients.map((c) => monitors.get(c)?.client ?? c).filter((c): c is Redis => c instanceof Redis)
  const watches = new Set(raw.map((c) => watchOf.get(c)).filter((w): w is SentinelMasterWatch => w !== undefined))
  for (const watch of watches) {
    const moved = await watch.check()
    for (const client of raw) {
      const stale = moved.get(client)
      if (stale !== undefined) return stale
    }
  }
  return undefined
}

// ---------------------------------------------------------------------------
// WAIT in a Cluster: the append and its WAIT on the topic's node

/** One append for {@link appendThenWait}: a command, or a Lua script (EVALSHA; EVAL when the node lacks it). */
export type AppendCommand =
  | { readonly command: string; readonly args: readonly (string | number)[] }
  | { readonly lua: string; readonly numberOfKeys?: number | undefined; readonly args: readonly (string | number)[] }

const shas = new Map<string, string>()
function sha1(lua: string): string {
  let sha = shas.get(lua)
  if (sha === undefined) {
    sha = createHash('sha1').update(lua).digest('hex')
    shas.set(lua, sha)
  }
  return sha
}

/**
 * Sends an append and `WAIT replicas timeoutMs` as one pipeline: on a
 * Cluster both go to the node that holds the append's keys (WAIT has none,
 * so the pipeline goes where the append goes), and WAIT, which counts only
 * its own connection's writes, counts this one. A redirection or a failover
 * reply on the append (nothing was appended) refreshes the slot map and sends
 * the pair again within the client's bound; `NOSCRIPT` sends the script's
 * source (EVAL) in the same pipeline. Blocks that node's connection of this
 * client for up to `timeoutMs`: give durable appends a client of their own.
 *
 * ## Example
 * ```ts
 * const { reply, acknowledged } = await appendThenWait(writer, { command: 'XADD', args: [key, '*', 'id', 'e1'] }, 1, 1_000)
 * ```
 * @returns the append's reply, how many replicas acknowledged, and WAIT's
 *   error if WAIT itself failed (the append did run)
 */
export function appendThenWait(client: RedisClient, append: AppendCommand, replicas: number, timeoutMs: number): Promise<{ reply: unknown; acknowledged: number; waitError?: Error }> {
  const monitor = monitors.get(client)
  const target = monitor?.client ?? client
  let viaEval = false
  const run = async (): Promise<{ reply: unknown; acknowledged: number; waitError?: Error }> => {
    for (;;) {
      const pipeline = target.pipeline()
      if ('lua' in append) {
        const keys = append.numberOfKeys === undefined ? [] : [append.numberOfKeys]
        pipeline.call(viaEval ? 'EVAL' : 'EVALSHA', viaEval ? append.lua : sha1(append.lua), ...keys, ...append.args)
      } else {
        pipeline.call(append.command, ...append.args)
      }
      pipeline.call('WAIT', replicas, timeoutMs)
      const [appended, waited] = (await pipeline.exec()) ?? []
      if (appended === undefined) throw new Error('the pipeline returned no reply')
      const appendError = appended[0]
      if (appendError !== null) {
        if (!viaEval && /^NOSCRIPT\b/.test(appendError.message)) {
          viaEval = true // nothing ran: send the source
          continue
        }
        if (target instanceof Cluster && isTopologyError(appendError)) target.refreshSlotsCache()
        throw appendError
      }
      const waitError = waited?.[0] ?? null
      if (waitError !== null) return { reply: appended[1], acknowledged: 0, waitError }
      return { reply: appended[1], acknowledged: Number(waited?.[1] ?? 0) }
    }
  }
  if (monitor === undefined) return run()
  return boundCall(monitor, 'lua' in append ? 'EVALSHA' : append.command.toUpperCase(), boundTimeouts.get(client), run) as Promise<{ reply: unknown; acknowledged: number; waitError?: Error }>
}

// ---------------------------------------------------------------------------
// Public constructors

function fatalTest(mode: Config['redis']['mode']): FatalTest {
  switch (mode) {
    case 'sentinel':
      // A sentinel that answers may point to a new master soon: wait for it (within the bound). ioredis also says
      // "All sentinels are unreachable" when it has only run through its list because the master they name refused
      // the connection (a killed master, before the failover): fatal only when a sentinel itself failed ("Last error").
      return (e) => e instanceof Error && /All sentinels are unreachable/.test(e.message) && /Last error:/.test(e.message)
    case 'cluster':
      return (e) => e instanceof Error && (e.name === 'ClusterAllFailedError' || /Failed to refresh slots cache|None of startup nodes is available/.test(e.message))
    default:
      return () => true
  }
}

function attachErrorListener(client: RedisClient, config: Config, options: RedisClientOptions, monitor: ConnectionMonitor): void {
  const onError = options.onError
  client.on('error', (error: unknown) => {
    if (onError === undefined) return
    // Sentinel and Cluster report a summary ("Failed to refresh slots cache"); the monitor (its listener ran
    // first) has named what a node or sentinel said, e.g. the certificate problem.
    const detailed = monitor.followsTopology && !isReplyError(error) ? monitor.lastError : undefined
    onError(detailed ?? sanitizeRedisError(error, config))
  })
}

/** Where an ioredis client connects and in which mode, read from its own options. */
function describeClient(client: RedisClient): { address: string; mode: 'standalone' | 'sentinel' | 'cluster'; password?: string } | undefined {
  const hostPort = (h: { host?: unknown; port?: unknown }): string => `${typeof h.host === 'string' ? h.host : 'localhost'}:${typeof h.port === 'number' ? String(h.port) : '6379'}`
  if (client instanceof Cluster) {
    const nodes = (client as unknown as { startupNodes?: unknown[] }).startupNodes ?? []
    const options = (client as unknown as { options?: { redisOptions?: { password?: string } } }).options
    const address = `cluster ${nodes.map((n) => (typeof n === 'object' && n !== null ? hostPort(n) : String(n))).join(',')}`
    const password = options?.redisOptions?.password
    return { address, mode: 'cluster', ...(typeof password === 'string' ? { password } : {}) }
  }
  const options = (client as unknown as { options?: RedisOptions }).options
  if (options === undefined) return undefined
  const password = typeof options.password === 'string' ? { password: options.password } : {}
  if (Array.isArray(options.sentinels) && options.sentinels.length > 0) {
    return { address: `sentinels ${options.sentinels.map((h) => hostPort(h)).join(',')} (master ${options.name ?? 'mymaster'})`, mode: 'sentinel', ...password }
  }
  return { address: hostPort(options), mode: 'standalone', ...password }
}

/**
 * Tracks, bounds and hides the secrets of a client made here or given by the
 * user: every call settles within `commandTimeout` of the call, connection
 * failures reject as {@link ConnectionError}.
 *
 * ## Example
 * ```ts
 * import { superviseClient, loadConfig } from 'rx-redis-streams'
 * const client = superviseClient(new Redis(url), loadConfig(), { commandTimeout: 5_000 })
 * ```
 */
export function superviseClient<C extends RedisClient>(
  client: C,
  config: Config,
  options: { readonly commandTimeout?: number | undefined; readonly onError?: ((error: BackendError) => void) | undefined } = {},
): C {
  const given = describeClient(client)
  const address = given?.address ?? describeAddress(config)
  const secrets = [config.redis.password, config.redis.tlsOptions?.key, given?.password]
  const mode = given?.mode ?? config.redis.mode
  const monitor = new ConnectionMonitor(client, address, secrets, fatalTest(mode), CONNECT_FAIL_FAST_MS, mode === 'sentinel' || mode === 'cluster')
  attachErrorListener(client, config, options, monitor)
  hideSecrets(client, address)
  if (mode === 'sentinel' && client instanceof Redis) watchSentinelMaster(client)
  return bounded(client, monitor, options.commandTimeout)
}

/**
 * The main client of a deployment: standalone (with `db`, ACL user, password,
 * TLS for `rediss://` or `EVENT_REDIS_TLS_*`), Cluster (seed nodes) or
 * Sentinel (`masterName`, following `+switch-master` at once), with
 * autopipelining and capped exponential reconnection. Every call settles
 * within the command timeout of the call; a Redis that cannot be reached
 * makes calls reject with a {@link ConnectionError} (standalone: after about
 * 1.5 s) naming the address and the cause.
 *
 * ## Example
 * ```ts
 * import { createRedisClient, loadConfig } from 'rx-redis-streams'
 * const client = createRedisClient(loadConfig({ redisUrl: 'redis://localhost:6379' }))
 * await client.ping()
 * await client.quit()
 * ```
 * @param config the decoded configuration (not `memory://`)
 * @param options connection name, lazy connect, error listener, command timeout
 * @returns an ioredis `Redis` or `Cluster`
 * @throws {ConfigError} when the configuration selects the in-memory backend
 */
export function createRedisClient(config: Config, options: RedisClientOptions = {}): RedisClient {
  const commandTimeout = options.commandTimeout ?? config.commandTimeoutMs
  return superviseClient(build(config, options, true), config, { commandTimeout, onError: options.onError })
}

/**
 * A dedicated connection with the same settings as {@link createRedisClient},
 * for blocking reads (`XREADGROUP BLOCK`), so that they never delay other
 * commands. No autopipelining: nothing else shares it. For Cluster, a new
 * `Cluster`. A Redis that cannot be reached rejects its reads with a
 * {@link ConnectionError} as for the main client.
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
  const reader = options.reader ?? options.commandTimeout === undefined
  return superviseClient(build(config, options, false, reader ? CONSUMER_READER_CLIENT_SETTINGS : {}), config, { commandTimeout: options.commandTimeout, onError: options.onError })
}

/**
 * A connection of its own for control commands (`PING`, `ROLE`, `WAIT`):
 * nothing writes on it, so a paused or busy write path (`CLIENT PAUSE
 * WRITE`, a long pipeline) never delays them. Lazy: it connects on first use.
 *
 * ## Example
 * ```ts
 * import { createControlClient, loadConfig } from 'rx-redis-streams'
 * const control = createControlClient(loadConfig())
 * await control.ping()
 * ```
 */
export function createControlClient(config: Config, options: RedisClientOptions = {}): RedisClient {
  const commandTimeout = options.commandTimeout ?? config.commandTimeoutMs
  return superviseClient(build(config, { lazyConnect: true, ...options }, false), config, { commandTimeout, onError: options.onError })
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

/**
 * New connections like a user's client (`duplicate()`: same address, TLS,
 * credentials), supervised as the library's own: for the blocking reader and
 * the control connection when the user supplies `redisClient`.
 *
 * ## Example
 * ```ts
 * const reader = duplicateClient(userClient, config, { autoPipelining: false })
 * ```
 */
export function duplicateClient(
  client: RedisClient,
  config: Config,
  options: { readonly autoPipelining: boolean; readonly lazyConnect?: boolean; readonly commandTimeout?: number | undefined; readonly reader?: boolean | undefined },
): RedisClient {
  const override = { enableAutoPipelining: options.autoPipelining, ...(options.lazyConnect === undefined ? {} : { lazyConnect: options.lazyConnect }) }
  const reader = options.reader ?? options.commandTimeout === undefined
  const copy: RedisClient =
    client instanceof Cluster
      ? client.duplicate(undefined, reader ? ({ ...override, redisOptions: { ...client.options.redisOptions, ...CONSUMER_READER_CLIENT_SETTINGS } } as Parameters<Cluster['duplicate']>[1]) : override)
      : client.duplicate(reader ? { ...override, ...CONSUMER_READER_CLIENT_SETTINGS } : override)
  return superviseClient(copy, config, { commandTimeout: options.commandTimeout })
}
