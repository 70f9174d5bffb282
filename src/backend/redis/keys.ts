/**
 * Every Redis key of the library is built here. A topic's keys carry the topic
 * as a `{hash tag}`, so they share one Cluster slot and one Lua script may
 * touch them all.
 */
export interface RedisKeys {
  /** `event:stream:{topic}`: the topic's events. */
  stream(topic: string): string
  /** `event:dlq:{topic}`: the topic's dead letters. */
  dlq(topic: string): string
  /** `event:delayed:{topic}`: delayed event ids scored by due time (ms). */
  delayed(topic: string): string
  /** `event:delayed-data:{topic}`: delayed event id -> its stream fields (JSON). */
  delayedData(topic: string): string
  /** `event:topics`: the registry of known topics (no KEYS or SCAN anywhere). */
  topics(): string
  /**
   * `event:dedupe:{topic}`: the base name of the retry-safe publish's buckets, `<base>:<window ms>:<bucket>` (hash event
   * id -> stream id, one per window-long time bucket, built by `appendOnce-2.lua` from the server's clock).
   */
  dedupe(topic: string): string
  /** `event:published:{topic}:<event id>`: the earlier layout's dedupe key (string, PX = the window), still looked up for one window after an upgrade. */
  published(topic: string, eventId: string): string
  /** `event:lost:{topic}`: group -> how many of its pending entries were trimmed or deleted before they were handled (hash). */
  lost(topic: string): string
  /** `event:opstate:{topic}:<group>:<operator>:<part>`: one part of a window or join operator's state (hash, expires). */
  operatorState(topic: string, group: string, operator: string, part: string): string
}

/**
 * The key builder for one prefix.
 *
 * @example
 * ```ts
 * redisKeys('event:').stream('user-events') // 'event:stream:{user-events}'
 * ```
 */
export function redisKeys(prefix: string): RedisKeys {
  return {
    stream: (topic) => `${prefix}stream:{${topic}}`,
    dlq: (topic) => `${prefix}dlq:{${topic}}`,
    delayed: (topic) => `${prefix}delayed:{${topic}}`,
    delayedData: (topic) => `${prefix}delayed-data:{${topic}}`,
    topics: () => `${prefix}topics`,
    dedupe: (topic) => `${prefix}dedupe:{${topic}}`,
    published: (topic, eventId) => `${prefix}published:{${topic}}:${eventId}`,
    lost: (topic) => `${prefix}lost:{${topic}}`,
    operatorState: (topic, group, operator, part) => `${prefix}opstate:{${topic}}:${group}:${operator}:${part}`,
  }
}
