/** How to reach the store. `memory` selects the in-process backend (`memory://`). */
export type RedisMode = 'standalone' | 'cluster' | 'sentinel' | 'memory'

/** One host and port. */
export interface HostPort {
  readonly host: string
  readonly port: number
}

/**
 * TLS settings beyond `rediss://` (`EVENT_REDIS_TLS_*`), applied to every
 * connection: the shared one, blocking readers, Sentinel and Cluster nodes.
 * PEM texts (a path given in the configuration is read when it is loaded).
 */
export interface RedisTlsConfig {
  /** Trusted CA certificate(s), PEM; replaces Node's default CA list. */
  readonly ca?: string
  /** Client certificate, PEM (mutual TLS). */
  readonly cert?: string
  /** Client private key, PEM. A secret: never logged or printed. */
  readonly key?: string
  /** The name the server certificate must carry (SNI and verification), when it is not the host connected to. */
  readonly servername?: string
  /** `false` accepts any server certificate (testing only). Default true. */
  readonly rejectUnauthorized?: boolean
}

/** Connection settings decoded from `EVENT_REDIS_*` (or the options object). */
export interface RedisConnectionConfig {
  readonly mode: RedisMode
  /** One host (standalone), the seed nodes (cluster) or the sentinels (sentinel). */
  readonly hosts: readonly HostPort[]
  readonly username?: string
  readonly password?: string
  readonly db: number
  /** `rediss://`, or any `EVENT_REDIS_TLS_*` setting. */
  readonly tls: boolean
  /** CA, client certificate, server name... (`EVENT_REDIS_TLS_*`); only with `tls`. */
  readonly tlsOptions?: RedisTlsConfig
  /** Sentinel master name (`EVENT_REDIS_MASTER_NAME`). */
  readonly masterName?: string
}

/** The decoded, frozen configuration. Durations are in milliseconds. */
export interface Config {
  readonly redis: RedisConnectionConfig
  readonly consumerTimeoutMs: number
  readonly maxRetries: number
  readonly retryBackoffMs: number
  readonly dlqTtlMs: number
  readonly staleConsumerTimeoutMs: number
  readonly batchSize: number
  readonly maxPendingMessages: number
  readonly claimMinIdleTimeMs: number
  readonly claimIntervalMs: number
  readonly delayedQueueEnabled: boolean
  readonly delayedQueueCheckIntervalMs: number
  readonly keyPrefix: string
  readonly maxPayloadBytes: number
  /**
   * Every call that talks to Redis settles within this many ms of the call,
   * queueing and internal retries included (`EVENT_COMMAND_TIMEOUT`, default 10 s).
   */
  readonly commandTimeoutMs: number
  /** Replicas each publish waits for (`WAIT`); 0 = off. */
  readonly publishWaitReplicas: number
  /** How long a publish waits for them, ms. */
  readonly publishWaitTimeoutMs: number
  /** Containers (objects, arrays) nested at most this deep in a payload, on publish and on read. */
  readonly maxPayloadDepth: number
  /** Window in ms within which a publish retried with the same event id is appended once; 0 = off. */
  readonly publishDedupeWindowMs: number
  /**
   * The layout new entries are written in (`EVENT_WIRE_FORMAT`): the two-field
   * `compact` (the default), or `fields`, the five-field layout that readers of
   * older releases also read (keep it until every consumer runs this version).
   */
  readonly wireFormat: 'fields' | 'compact'
  /** Approximate MAXLEN retention of topic streams; undefined = unbounded. */
  readonly streamMaxLen?: number
}
