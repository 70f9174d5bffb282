/**
 * Statistics of topics, consumer groups and consumers, read from the store.
 * Topics come from the topic registry (`event:topics`), never from KEYS or SCAN.
 * `stats()` uses the README's names; {@link toSpecShape} gives the original
 * spec's shape (`messagesCount`, `pendingMessagesCount`).
 */
import type { GroupInfo, StreamBackend } from './backend/types.js'
import { GroupMissingError } from './errors.js'
import { validateTopic } from './topic.js'

/**
 * One consumer of a group.
 *
 * @example
 * ```ts
 * const [c] = (await events.stats('orders')).topics['orders']?.groups['billing']?.consumers ?? []
 * console.log(c?.name, c?.pending, c?.idleMs)
 * ```
 */
export interface ConsumerStats {
  readonly name: string
  /** Entries delivered to it and not yet settled. */
  readonly pending: number
  /** Milliseconds since it last interacted with the group. */
  readonly idleMs: number
}

/**
 * One consumer group of a topic.
 *
 * @example
 * ```ts
 * const g = (await events.stats('orders')).topics['orders']?.groups['billing']
 * if (g && (g.lag ?? 0) > 1_000) alert(`billing is ${String(g.lag)} events behind`)
 * ```
 */
export interface GroupStats {
  readonly topic: string
  readonly name: string
  /** Entries delivered and not yet settled (the group's PEL). */
  readonly pending: number
  /**
   * Entries not yet delivered to the group (XINFO GROUPS `lag`); 0 when nothing
   * lies after `lastDeliveredId`, whatever Redis' counters say; null when Redis
   * cannot tell (after deletions).
   */
  readonly lag: number | null
  /**
   * Pending entries of this group whose bodies were trimmed (`MAXLEN`) or
   * deleted before a handler got them; they were acked as lost. Kept in Redis
   * (`event:lost:{topic}`), so it counts every process and survives restarts.
   */
  readonly lost: number
  readonly lastDeliveredId: string
  readonly consumers: readonly ConsumerStats[]
}

/**
 * One topic.
 *
 * @example
 * ```ts
 * const t = (await events.stats('orders')).topics['orders']
 * console.log(t?.length, t?.firstId, t?.lastId, t?.delayed, t?.deadLetters)
 * ```
 */
export interface TopicStats {
  readonly name: string
  /** Entries in the topic stream. */
  readonly length: number
  readonly firstId: string | null
  readonly lastId: string | null
  /** Delayed events waiting for their due time. */
  readonly delayed: number
  /** Dead letters of the topic. */
  readonly deadLetters: number
  /** Its consumer groups, by name. */
  readonly groups: Readonly<Record<string, GroupStats>>
}

/**
 * A consumer group over every topic it consumes.
 *
 * @example
 * ```ts
 * for (const [group, g] of Object.entries((await events.stats()).consumerGroups)) {
 *   console.log(`Group ${group}: ${String(g.pending)} pending messages`)
 * }
 * ```
 */
export interface ConsumerGroupStats {
  readonly name: string
  readonly topics: readonly string[]
  /** Pending entries summed over its topics. */
  readonly pending: number
  /** Lag summed over its topics; null when any is unknown. */
  readonly lag: number | null
  /** Entries lost to trimming, summed over its topics (see {@link GroupStats.lost}). */
  readonly lost: number
  readonly consumers: number
}

/**
 * Statistics of an event system: `topics[name]` and `consumerGroups[name]`.
 *
 * @example
 * ```ts
 * const stats = await events.stats()
 * for (const [topic, t] of Object.entries(stats.topics)) console.log(`Topic ${topic}: ${String(t.length)} messages`)
 * ```
 */
export interface EventStats {
  /** When they were read, ms since the epoch. */
  readonly collectedAt: number
  readonly topics: Readonly<Record<string, TopicStats>>
  readonly consumerGroups: Readonly<Record<string, ConsumerGroupStats>>
}

/**
 * Options of {@link collectStats}.
 *
 * @example
 * ```ts
 * await collectStats(events.backend, { topic: 'orders' })
 * ```
 */
export interface StatsOptions {
  /** Only this topic (read even when it is not in the registry). */
  readonly topic?: string | undefined
  /** Topics read at once. Default 8. */
  readonly concurrency?: number
}

/** A record without a prototype: topic and group names such as `__proto__` are plain keys. */
function record<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>
}

async function groupStats(backend: StreamBackend, topic: string, info: GroupInfo): Promise<GroupStats> {
  let consumers: ConsumerStats[] = []
  try {
    consumers = (await backend.consumers(topic, info.name)).map((c) => ({ name: c.name, pending: c.pending, idleMs: c.idleMs }))
  } catch (error) {
    if (!(error instanceof GroupMissingError)) throw error // deleted meanwhile: no consumers
  }
  return {
    topic,
    name: info.name,
    pending: info.pending,
    lag: info.lag,
    lost: info.lost ?? 0,
    lastDeliveredId: info.lastDeliveredId,
    consumers,
  }
}

/**
 * Reads the statistics of one topic: stream length and first/last ids,
 * delayed and dead-letter counts, and each group with its pending count, lag
 * and consumers.
 *
 * @example
 * ```ts
 * import { topicStats } from 'rx-redis-streams'
 * const s = await topicStats(events.backend, 'orders')
 * console.log(s.length, s.groups['billing']?.lag)
 * ```
 */
export async function topicStats(backend: StreamBackend, topic: string): Promise<TopicStats> {
  const [info, delayed, deadLetters, groups] = await Promise.all([
    backend.topicInfo(topic),
    backend.countScheduled(topic),
    backend.dlqCount(topic),
    backend.groups(topic),
  ])
  const byName = record<GroupStats>()
  for (const g of await Promise.all(groups.map((g) => groupStats(backend, topic, g)))) byName[g.name] = g
  return {
    name: topic,
    length: info.length,
    firstId: info.firstId,
    lastId: info.lastId,
    delayed,
    deadLetters,
    groups: byName,
  }
}

/** Runs `fn` over `items`, at most `limit` at once, keeping the order of the results. */
async function mapLimited<A, B>(items: readonly A[], limit: number, fn: (item: A) => Promise<B>): Promise<B[]> {
  const results: B[] = new Array<B>(items.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      results[i] = await fn(items[i] as A)
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker))
  return results
}

/**
 * Reads the statistics of every registered topic (or of one):
 * `topics[name].groups[group].consumers` and `consumerGroups[name]`, with the
 * README's names ({@link toSpecShape} gives the original spec's).
 *
 * @example
 * ```ts
 * import { collectStats } from 'rx-redis-streams'
 * const stats = await collectStats(events.backend)
 * for (const [topic, t] of Object.entries(stats.topics)) console.log(topic, t.length)
 * for (const [group, g] of Object.entries(stats.consumerGroups)) console.log(group, g.pending, g.lag)
 * ```
 * @param backend the store
 * @param options one topic only, concurrency
 * @returns the statistics
 * @throws {InvalidTopicError} for an invalid topic name
 */
export async function collectStats(backend: StreamBackend, options: StatsOptions = {}): Promise<EventStats> {
  if (options.topic !== undefined) validateTopic(options.topic)
  const names = options.topic === undefined ? await backend.topics() : [options.topic]
  const all = await mapLimited(names, options.concurrency ?? 8, (topic) => topicStats(backend, topic))
  const topics = record<TopicStats>()
  const consumerGroups = record<{ name: string; topics: string[]; pending: number; lag: number | null; lost: number; consumers: number }>()
  for (const t of all) {
    topics[t.name] = t
    for (const g of Object.values(t.groups)) {
      const entry = (consumerGroups[g.name] ??= { name: g.name, topics: [], pending: 0, lag: 0, lost: 0, consumers: 0 })
      entry.topics.push(t.name)
      entry.pending += g.pending
      entry.lag = entry.lag === null || g.lag === null ? null : entry.lag + g.lag
      entry.lost += g.lost
      entry.consumers += g.consumers.length
    }
  }
  return { collectedAt: Date.now(), topics, consumerGroups }
}

/**
 * A topic in the original spec's shape.
 *
 * @example
 * ```ts
 * const spec = await events.specStats()
 * console.log(spec.topics['orders']?.messagesCount)
 * ```
 */
export interface SpecTopicStats {
  /** Entries in the topic stream (`length` in {@link TopicStats}). */
  readonly messagesCount: number
  /** Delayed events waiting. */
  readonly delayedCount: number
  /** Dead letters of the topic. */
  readonly deadLetterCount: number
}

/**
 * A consumer group in the original spec's shape.
 *
 * @example
 * ```ts
 * const spec = await events.specStats()
 * console.log(spec.consumerGroups['billing']?.pendingMessagesCount)
 * ```
 */
export interface SpecConsumerGroupStats {
  /** Pending entries summed over its topics (`pending` in {@link ConsumerGroupStats}). */
  readonly pendingMessagesCount: number
  /** Lag summed over its topics; null when any is unknown. */
  readonly lag: number | null
  /** Consumers summed over its topics. */
  readonly consumersCount: number
}

/**
 * The statistics in the original spec's shape: `topics[name].messagesCount`
 * and `consumerGroups[name].pendingMessagesCount`.
 *
 * @example
 * ```ts
 * const spec = await events.specStats()
 * for (const [topic, t] of Object.entries(spec.topics)) console.log(`Topic ${topic}: ${String(t.messagesCount)} messages`)
 * ```
 */
export interface SpecStats {
  readonly topics: Readonly<Record<string, SpecTopicStats>>
  readonly consumerGroups: Readonly<Record<string, SpecConsumerGroupStats>>
}

/**
 * The one place the original spec's names live: converts {@link EventStats}
 * (the README's names) to the spec's shape.
 *
 * @example
 * ```ts
 * import { toSpecShape } from 'rx-redis-streams'
 * const spec = toSpecShape(await events.stats())
 * console.log(spec.consumerGroups['billing']?.pendingMessagesCount)
 * ```
 */
export function toSpecShape(stats: EventStats): SpecStats {
  const topics = record<SpecTopicStats>()
  for (const [name, t] of Object.entries(stats.topics)) {
    topics[name] = { messagesCount: t.length, delayedCount: t.delayed, deadLetterCount: t.deadLetters }
  }
  const consumerGroups = record<SpecConsumerGroupStats>()
  for (const [name, g] of Object.entries(stats.consumerGroups)) {
    consumerGroups[name] = { pendingMessagesCount: g.pending, lag: g.lag, consumersCount: g.consumers }
  }
  return { topics, consumerGroups }
}
