/** How to reach the store. `memory` selects the in-process backend (`memory://`). */
export type RedisMode = 'standalone' | 'cluster' | 'sentinel' | 'memory'

/** One host and port. */
export interface HostPort {
  readonly host: string
  readonly port: number
}

/** Connection settings decoded from `EVENT_REDIS_*` (or the options object). */
export interface RedisConnectionConfig {
  readonly mode: RedisMode
  /** One host (standalone), the seed nodes (cluster) or the sentinels (sentinel). */
  readonly hosts: readonly HostPort[]
  readonly username?: string
  readonly password?: string
  readonly db: number
  /** `rediss://`. */
  readonly tls: boolean
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
  /** Containers (objects, arrays) nested at most this deep in a payload, on publish and on read. */
  readonly maxPayloadDepth: number
  /** Window in ms within which a publish retried with the same event id is appended once; 0 = off. */
  readonly publishDedupeWindowMs: number
  /** Approximate MAXLEN retention of topic streams; undefined = unbounded. */
  readonly streamMaxLen?: number
}
