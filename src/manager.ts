import { Observable, type Subscription as RxSubscription } from 'rxjs'
import { handleEach, type Handled, type Handler, type HandleEachOptions } from '../operators/handle-each.js'
import { matchPattern, type EventPattern } from '../operators/match-pattern.js'
import { MemoryBackend } from './backend/memory/index.js'
import {
  createBlockingClient,
  createControlClient,
  createRedisClient,
  duplicateClient,
  sanitizeRedisError,
  superviseClient,
} from './backend/redis/connection.js'
import { RedisBackend, type RedisClient } from './backend/redis/redis-backend.js'
import type { StreamBackend } from './backend/types.js'
import { loadConfig, warnUnknownOptions, type ConfigOptions } from './config/index.js'
import type { Config } from './config/types.js'
import { AckBatcher } from './consumer/acker.js'
import type { Message } from './consumer/message.js'
import { iterateMessages } from './consumer/iterate.js'
import { defaultConsumerName, Subscription, validateConsumeOptions, type ConsumeOptions, type EngineContext, type SubscriptionStatus } from './consumer/subscription.js'
import { DeadLetterQueue } from './dead-letter.js'
import { DelayedPromoter } from './delayed.js'
import { ClosedError, ConsumerNameInUseError } from './errors.js'
import type { Event } from './event.js'
import { checkHealth, UnhealthyError, type HealthOptions, type HealthReport } from './health.js'
import { silentLogger, type Logger } from './logger.js'
import { BatchPublisher, Publisher, type EventPublisher, type PublishHook } from './publisher.js'
import { collectStats, toSpecShape, type EventStats, type SpecStats } from './stats.js'
import { observeGroupGauges, type GroupSample } from './telemetry/gauges.js'
import { createInstruments, type Instruments } from './telemetry/instruments.js'
import { redactingLogger } from './telemetry/logging.js'
import { isTracingEnabled, traceContextHook, withSendSpan } from './telemetry/tracing.js'
import { validateName, validateTopic } from './topic.js'

/**
 * Options of {@link createEventManager}: every configuration option (the
 * `EVENT_*` variables in camelCase; an option wins over its variable), plus
 * the logger and the backend.
 *
 * @example
 * ```ts
 * createEventManager({ redisUrl: 'redis://localhost:6379', maxRetries: 5, logger: pino(), healthTimeout: 1_000 })
 * ```
 */
export interface EventManagerOptions extends ConfigOptions {
  /**
   * Any pino logger (see also `createLogger`); default silent. The manager logs
   * through a child that redacts credentials; child loggers carry topic, group
   * and consumer, and lines about a message its stream id, event id and
   * correlation id.
   */
  readonly logger?: Logger
  /** `redis` (default), `memory` (in-process, no Redis), or a backend instance. */
  readonly backend?: 'redis' | 'memory' | StreamBackend
  /**
   * Use this ioredis client instead of creating one (it is not closed by
   * `close()`). Every other connection (blocking readers, the health/control
   * connection) is made with its `duplicate()`, so they share its address,
   * TLS settings and credentials; the `EVENT_REDIS_*` location is not used.
   */
  readonly redisClient?: RedisClient
  /** Environment to read `EVENT_*` from; default `process.env`. */
  readonly env?: NodeJS.ProcessEnv
  /**
   * Adds wire extras to published events. Default: `traceContextHook`, which
   * writes the `traceparent` of the `send` span when an OpenTelemetry tracer
   * provider is registered (and does nothing otherwise).
   */
  readonly publishHook?: PublishHook
  /** How long `health()` waits for PING before it reports the store unreachable, ms. Default 2 000. */
  readonly healthTimeout?: number
  /**
   * Which consumer groups the `rx_redis_streams.consumer_group.lag` and
   * `.pending` gauges report (only while an OpenTelemetry MeterProvider is
   * registered): the groups of the topics this manager consumes (default),
   * of every registered topic, or none.
   */
  readonly groupGauges?: 'subscribed' | 'all' | false
}

/** The keys of {@link EventManagerOptions} that are not settings (the settings are the keys of `ENV_VARIABLES`). */
const MANAGER_OPTIONS: readonly (keyof EventManagerOptions)[] = ['logger', 'backend', 'redisClient', 'env', 'publishHook', 'healthTimeout', 'groupGauges']

/**
 * A topic: publish to it, or consume it as a cold Observable.
 *
 * @example
 * ```ts
 * const orders = events.topic('orders')
 * await orders.publish(newEvent('order.created', { id: 1 }))
 * orders.consume({ group: 'billing' }).pipe(handleEach(bill)).subscribe()
 * ```
 */
export interface Topic {
  readonly name: string
  /**
   * A cold Observable of messages for one consumer of `group`: nothing happens
   * until it is subscribed; each subscription is one consumer; unsubscribing
   * stops pulling, lets in-flight messages settle and flushes acks.
   */
  consume(options: ConsumeOptions): Observable<Message>
  /**
   * The same messages as an async iterator, for `for await`: each message is
   * started as the loop body gets it, the credit is what the body has not
   * settled, and leaving the loop gives the rest back at once (see
   * `iterateMessages`).
   *
   * ## Example
   * ```ts
   * for await (const msg of events.topic('orders').messages({ group: 'billing' })) {
   *   await bill(msg.event.payload)
   *   await msg.ack()
   * }
   * ```
   */
  messages(options: ConsumeOptions): AsyncIterableIterator<Message>
  /** Publishes one event to this topic. */
  publish(event: Event): Promise<string>
}

/**
 * The consuming side alone (the original spec's `EventConsumer`): topic
 * Observables and the one-call `subscribe`.
 *
 * @example
 * ```ts
 * import { getEventConsumer } from 'rx-redis-streams'
 * const consumer = getEventConsumer()
 * consumer.subscribe('user-events', 'analytics', async (msg) => track(msg.event))
 * consumer.consume('user-events', { group: 'audit' }).pipe(handleEach(audit)).subscribe()
 * ```
 */
export interface EventConsumer {
  /** A topic handle (see {@link EventManager.topic}). */
  topic(name: string): Topic
  /** `topic(name).consume(options)`. */
  consume(topic: string, options: ConsumeOptions): Observable<Message>
  /** Runs a handler for each event of `topic` in `group` (see {@link EventManager.subscribe}). */
  subscribe<P = unknown>(topic: string, group: string, handler: Handler<P>, options?: SubscribeOptions): HandlerSubscription
}

/**
 * Options of {@link EventManager.subscribe}: consumption, handling, and an optional pattern.
 *
 * @example
 * ```ts
 * events.subscribe('user-events', 'web-signups', handle, {
 *   pattern: { eventName: 'user.signup', headers: { source: 'web-app' } },
 *   concurrency: 10,
 *   retry: { maxRetries: 5, initialDelay: 500 },
 * })
 * ```
 */
export interface SubscribeOptions extends Omit<ConsumeOptions, 'group'>, Omit<HandleEachOptions, 'logger'> {
  /** Only events matching this are handled; the others are acked. */
  readonly pattern?: EventPattern
  /** Called with each settled message (for logging or tests). */
  readonly onSettled?: (handled: Handled) => void
}

/**
 * A running handler subscription.
 *
 * @example
 * ```ts
 * const sub = events.subscribe('orders', 'billing', bill)
 * process.once('SIGTERM', () => void sub.unsubscribe().then(() => events.close()))
 * ```
 */
export interface HandlerSubscription {
  /** Stops consuming; resolves when in-flight messages settled (up to the drain timeout) and acks are flushed. */
  unsubscribe(): Promise<void>
}

/**
 * What `health()` and `stats()` need from the manager's internals.
 *
 * @example
 * ```ts
 * const { backend, subscriptions } = events.internals
 * console.log(backend.kind, subscriptions().map((s) => s.state))
 * ```
 */
export interface ManagerInternals {
  readonly backend: StreamBackend
  readonly config: Config
  readonly logger: Logger
  subscriptions(): SubscriptionStatus[]
  promoters(): { topic: string; alive: boolean; lastRunAt: number | null }[]
}

/**
 * Publishes events, opens topics, manages dead letters, reports stats and
 * health, and closes everything. Narrow views: `publisher`, `consumer`,
 * `deadLetters`.
 *
 * @example
 * ```ts
 * import { createEventManager, newEvent } from 'rx-redis-streams'
 * const events = createEventManager()   // EVENT_* environment, or an options object
 * await events.publish('user-events', newEvent('user.signup', { userId: 123 }))
 * events.topic('user-events').consume({ group: 'mailer' }).subscribe(async (msg) => {
 *   console.log(msg.event.name, msg.event.payload)
 *   await msg.ack()
 * })
 * await events.close()
 * ```
 */
export class EventManager implements EventPublisher, EventConsumer {
  /** The decoded configuration. */
  readonly config: Config
  /** The logger given (or a silent one), as a child that redacts credentials. */
  readonly logger: Logger
  /** The storage backend. */
  readonly backend: StreamBackend
  /** Publishing alone. */
  readonly publisher: EventPublisher
  /** Consuming alone. */
  readonly consumer: EventConsumer
  /** Dead letter management. */
  readonly deadLetters: DeadLetterQueue
  readonly #instruments: Instruments
  readonly #acker: AckBatcher
  readonly #publisher: Publisher
  readonly #subscriptions = new Set<Subscription>()
  readonly #handlerSubscriptions = new Set<RxSubscription>()
  readonly #promoters = new Map<string, { promoter: DelayedPromoter; refs: number }>()
  readonly #closing = new Set<Promise<void>>()
  readonly #closeHooks: (() => Promise<void> | void)[] = []
  readonly #healthTimeoutMs: number
  readonly #stopGauges: () => void
  #closed: Promise<void> | undefined

  constructor(options: EventManagerOptions = {}) {
    const given = options.logger ?? silentLogger()
    // Without a logger, configuration warnings go to process.emitWarning (visible), not to the silent logger.
    this.config = loadConfig(options, options.env ?? process.env, options.logger)
    warnUnknownOptions(options, MANAGER_OPTIONS, options.logger)
    this.logger = redactingLogger(given, [this.config.redis.password, options.redisPassword])
    const healthTimeout = options.healthTimeout ?? 2_000
    if (!Number.isFinite(healthTimeout) || healthTimeout <= 0) throw new RangeError(`healthTimeout must be a positive number of ms, got ${String(healthTimeout)}`)
    this.#healthTimeoutMs = healthTimeout
    this.backend = createBackend(options, this.config, this.logger)
    this.#instruments = createInstruments()
    this.#acker = new AckBatcher(this.backend, this.logger)
    this.#publisher = new Publisher({
      backend: this.backend,
      config: this.config,
      instruments: this.#instruments,
      hook: options.publishHook ?? traceContextHook,
      onDelayed: (topic, dueAt) => {
        if (!this.config.delayedQueueEnabled || this.#closed) return
        // The manager keeps promoting topics it scheduled on until it closes.
        let entry = this.#promoters.get(topic)
        if (entry === undefined || entry.refs === 0) {
          this.#acquirePromoter(topic)
          entry = this.#promoters.get(topic)
        }
        entry?.promoter.notify(dueAt)
      },
    })
    this.publisher = {
      publish: (topic, event) => this.publish(topic, event),
      publishBatch: (topic, events) => this.publishBatch(topic, events),
      publishWithDelay: (topic, event, delayMs) => this.publishWithDelay(topic, event, delayMs),
      publishAt: (topic, event, date) => this.publishAt(topic, event, date),
      cancelDelayed: (topic, eventId) => this.cancelDelayed(topic, eventId),
      batch: (topic) => this.batch(topic),
    }
    this.deadLetters = new DeadLetterQueue(this.backend, this.config)
    this.consumer = {
      topic: (name) => this.topic(name),
      consume: (topic, consumeOptions) => this.consume(topic, consumeOptions),
      subscribe: (topic, group, handler, subscribeOptions) => this.subscribe(topic, group, handler, subscribeOptions),
    }
    const gauges = options.groupGauges ?? 'subscribed'
    this.#stopGauges = gauges === false ? () => undefined : observeGroupGauges({ sample: () => this.#sampleGroups(gauges) })
    this.logger.debug({ backend: this.backend.kind, redis: describeConnection(this.config) }, 'event manager created')
  }

  /** Group numbers for the gauges: of the topics consumed here, or of every registered topic. */
  async #sampleGroups(scope: 'subscribed' | 'all'): Promise<GroupSample[]> {
    const topics = scope === 'all' ? await this.backend.topics() : [...new Set([...this.#subscriptions].map((s) => s.topic))]
    const perTopic = await Promise.all(
      topics.map(async (topic) => (await this.backend.groups(topic)).map((g) => ({ topic, group: g.name, pending: g.pending, lag: g.lag }))),
    )
    return perTopic.flat()
  }

  #acquirePromoter(topic: string): () => void {
    if (!this.config.delayedQueueEnabled) return () => undefined
    let entry = this.#promoters.get(topic)
    if (entry === undefined) {
      const promoter = new DelayedPromoter({
        topic,
        backend: this.backend,
        checkIntervalMs: this.config.delayedQueueCheckIntervalMs,
        logger: this.logger,
        instruments: this.#instruments,
        maxLen: this.config.streamMaxLen,
      })
      promoter.start()
      entry = { promoter, refs: 0 }
      this.#promoters.set(topic, entry)
    }
    entry.refs++
    let released = false
    return () => {
      if (released) return
      released = true
      const e = this.#promoters.get(topic)
      if (e !== undefined && --e.refs === 0) {
        e.promoter.stop()
        this.#promoters.delete(topic)
      }
    }
  }

  #engine(): EngineContext {
    return {
      backend: this.backend,
      config: this.config,
      logger: this.logger,
      acker: this.#acker,
      instruments: this.#instruments,
      acquirePromoter: (topic) => this.#acquirePromoter(topic),
      onClosed: (s) => this.#subscriptionEnded(s),
    }
  }

  /** A subscription ended: forgotten, unless it errored (health() shows it until one with its name replaces it). */
  #subscriptionEnded(ended: Subscription): void {
    if (!ended.errored) {
      this.#subscriptions.delete(ended)
      return
    }
    for (const s of this.#subscriptions) {
      if (s !== ended && s.errored && s.topic === ended.topic && s.group === ended.group && s.consumer === ended.consumer) this.#subscriptions.delete(s)
    }
  }

  /** A closed manager's publishing calls reject (they never throw synchronously). */
  #rejectIfClosed(): Promise<never> | undefined {
    return this.#closed ? Promise.reject(new ClosedError('event manager')) : undefined
  }

  /**
   * A topic handle.
   *
   * @example
   * ```ts
   * events.topic('orders').consume({ group: 'billing', maxPendingMessages: 100 }).pipe(handleEach(bill)).subscribe()
   * ```
   * @throws {InvalidTopicError}
   */
  topic(name: string): Topic {
    validateTopic(name)
    return {
      name,
      consume: (options) => this.#consume(name, options),
      messages: (options) => iterateMessages(this.#consume(name, options)),
      publish: (event) => this.publish(name, event),
    }
  }

  /**
   * `topic(name).consume(options)`: a cold Observable of the topic's messages
   * for one consumer of `options.group`.
   *
   * @example
   * ```ts
   * events.consume('orders', { group: 'billing' }).pipe(handleEach(bill, { concurrency: 10 })).subscribe()
   * ```
   * @throws {InvalidTopicError}
   */
  consume(topic: string, options: ConsumeOptions): Observable<Message> {
    return this.topic(topic).consume(options)
  }

  #consume(topic: string, options: ConsumeOptions): Observable<Message> {
    validateName('group', options.group)
    if (options.consumer !== undefined) validateName('consumer', options.consumer)
    validateConsumeOptions(options)
    // Chosen once per consume() call: a re-subscription (retry()) is the same consumer, not a new one.
    const consumer = options.consumer ?? defaultConsumerName()
    const named = { ...options, consumer }
    return new Observable<Message>((subscriber) => {
      if (this.#closed) {
        subscriber.error(new ClosedError('event manager'))
        return
      }
      // One live subscription per consumer name in this process; one still stopping hands over (gives back what it did not start).
      let predecessor: Promise<void> | undefined
      for (const s of this.#subscriptions) {
        if (s.topic !== topic || s.group !== options.group || s.consumer !== consumer || s.errored) continue
        if (s.live) {
          subscriber.error(new ConsumerNameInUseError(topic, options.group, consumer))
          return
        }
        predecessor = s.stop('takeover')
      }
      const subscription = new Subscription(this.#engine(), topic, named, subscriber)
      this.#subscriptions.add(subscription)
      subscription.start(predecessor)
      return () => {
        const stopping = subscription.stop()
        this.#closing.add(stopping)
        void stopping.finally(() => this.#closing.delete(stopping))
      }
    })
  }

  /**
   * The original spec's one-call API: consumes `topic` as one consumer of
   * `group` and runs `handler` for each event with retries, dead-lettering and
   * acks (see `handleEach`).
   *
   * @example
   * ```ts
   * const sub = events.subscribe('user-events', 'analytics', async (msg) => track(msg.event), { concurrency: 10 })
   * await sub.unsubscribe()
   * ```
   */
  subscribe<P = unknown>(topic: string, group: string, handler: Handler<P>, options: SubscribeOptions = {}): HandlerSubscription {
    const { pattern, onSettled, concurrency, retry, ordered, ...consume } = options
    let messages$ = this.topic(topic).consume({ ...consume, group }) as Observable<Message<P>>
    if (pattern !== undefined) messages$ = messages$.pipe(matchPattern(pattern as EventPattern<P>))
    const handling: HandleEachOptions = {
      ...(concurrency === undefined ? {} : { concurrency }),
      ...(retry === undefined ? {} : { retry }),
      ...(ordered === undefined ? {} : { ordered }),
    }
    const subscription = messages$.pipe(handleEach(handler, { ...handling, logger: this.logger })).subscribe({
      next: (handled) => onSettled?.(handled),
      error: (error: unknown) => this.logger.error({ err: error, topic, group }, 'subscription failed'),
    })
    this.#handlerSubscriptions.add(subscription)
    return {
      unsubscribe: async () => {
        this.#handlerSubscriptions.delete(subscription)
        subscription.unsubscribe()
        await Promise.all([...this.#closing])
      },
    }
  }

  /**
   * Appends one event to a topic; resolves to its stream id. Under a
   * `send <topic>` span when tracing is on.
   *
   * @example
   * ```ts
   * const streamId = await events.publish('user-events', newEvent('user.signup', { userId: 123 }))
   * ```
   */
  publish(topic: string, event: Event): Promise<string> {
    const closed = this.#rejectIfClosed()
    if (closed) return closed
    // Without a tracer provider, skip the span wrapper (and its allocations): publishing is a hot path.
    if (!isTracingEnabled()) return this.#publisher.publish(topic, event)
    return withSendSpan(topic, [event], () => this.#publisher.publish(topic, event))
  }

  /**
   * Appends events in one atomic round trip; resolves to their stream ids.
   *
   * @example
   * ```ts
   * await events.publishBatch('analytics', [newEvent('click', { x: 1 }), newEvent('click', { x: 2 })])
   * ```
   */
  publishBatch(topic: string, events: readonly Event[]): Promise<string[]> {
    const closed = this.#rejectIfClosed()
    if (closed) return closed
    return withSendSpan(topic, Array.isArray(events) ? events : [], () => this.#publisher.publishBatch(topic, events))
  }

  /**
   * Makes an event visible to consumers after `delayMs`; resolves to the event id.
   *
   * @example
   * ```ts
   * const id = await events.publishWithDelay('notifications', newEvent('reminder.send', { userId: 123 }), 5 * 60_000)
   * ```
   */
  publishWithDelay(topic: string, event: Event, delayMs: number): Promise<string> {
    const closed = this.#rejectIfClosed()
    if (closed) return closed
    return withSendSpan(topic, [event], () => this.#publisher.publishWithDelay(topic, event, delayMs))
  }

  /**
   * Makes an event visible to consumers at `date`; resolves to the event id.
   *
   * @example
   * ```ts
   * await events.publishAt('notifications', newEvent('report.due', {}), new Date('2030-01-01T08:00:00Z'))
   * ```
   */
  publishAt(topic: string, event: Event, date: Date | number): Promise<string> {
    const closed = this.#rejectIfClosed()
    if (closed) return closed
    return withSendSpan(topic, [event], () => this.#publisher.publishAt(topic, event, date))
  }

  /**
   * Cancels a delayed event that is not yet due; true if it was waiting.
   *
   * @example
   * ```ts
   * const id = await events.publishWithDelay('notifications', reminder, 60_000)
   * await events.cancelDelayed('notifications', id) // true
   * ```
   */
  cancelDelayed(topic: string, eventId: string): Promise<boolean> {
    return this.#publisher.cancelDelayed(topic, eventId)
  }

  /**
   * A batch publisher for one topic (the original spec's `NewBatchPublisher`).
   *
   * @example
   * ```ts
   * await events.batch('analytics').addJSON('user.action', { n: 1 }).addJSON('user.action', { n: 2 }).publish()
   * ```
   */
  batch(topic: string): BatchPublisher {
    return new BatchPublisher(this, topic)
  }

  /**
   * Statistics of every registered topic (or of one): stream length and
   * first/last ids, delayed and dead-letter counts, and per consumer group its
   * pending count, lag, entries lost to trimming and consumers (with idle
   * times). The original spec's shape comes from {@link EventManager.specStats}.
   *
   * @example
   * ```ts
   * const stats = await events.stats()
   * for (const [topic, t] of Object.entries(stats.topics)) console.log(topic, t.length, t.deadLetters)
   * const orders = (await events.stats('orders')).topics['orders']
   * console.log(orders?.groups['billing']?.lag)
   * ```
   * @throws {InvalidTopicError}
   */
  stats(topic?: string): Promise<EventStats> {
    return collectStats(this.backend, { topic })
  }

  /**
   * The statistics in the original spec's shape: `topics[name].messagesCount`,
   * `consumerGroups[name].pendingMessagesCount`.
   *
   * @example
   * ```ts
   * const spec = await events.specStats()
   * console.log(spec.topics['orders']?.messagesCount, spec.consumerGroups['billing']?.pendingMessagesCount)
   * ```
   * @throws {InvalidTopicError}
   */
  async specStats(topic?: string): Promise<SpecStats> {
    return toSpecShape(await this.stats(topic))
  }

  /**
   * A structured health report: the store's PING round trip (raced against
   * `timeoutMs`, so it never hangs), each subscription's state and last read,
   * claimers and promoters. `ok` is false, with `reasons`, when the store does
   * not answer in time, a subscription is reconnecting, or a promoter is stuck.
   *
   * @example
   * ```ts
   * app.get('/health', async (_req, res) => {
   *   const report = await events.health()
   *   res.status(report.ok ? 200 : 503).json(report)
   * })
   * ```
   */
  health(options: HealthOptions = {}): Promise<HealthReport> {
    return checkHealth(
      {
        backend: this.backend,
        closed: this.closed,
        promoterIntervalMs: this.config.delayedQueueCheckIntervalMs,
        subscriptions: () => this.internals.subscriptions(),
        promoters: () => this.internals.promoters(),
      },
      { timeoutMs: options.timeoutMs ?? this.#healthTimeoutMs },
    )
  }

  /**
   * The original spec's `Health(ctx) error`: resolves when healthy, rejects
   * with an {@link UnhealthyError} holding the report otherwise.
   *
   * @example
   * ```ts
   * await events.assertHealthy() // throws UnhealthyError: event system unhealthy: Redis is unreachable: ...
   * ```
   */
  async assertHealthy(options: HealthOptions = {}): Promise<void> {
    const report = await this.health(options)
    if (!report.ok) throw new UnhealthyError(report)
  }

  /** @internal What stats and health read. */
  get internals(): ManagerInternals {
    return {
      backend: this.backend,
      config: this.config,
      logger: this.logger,
      subscriptions: () => [...this.#subscriptions].map((s) => s.status),
      promoters: () => [...this.#promoters.values()].map(({ promoter }) => ({ topic: promoter.topic, alive: promoter.alive, lastRunAt: promoter.lastRunAt })),
    }
  }

  /** @internal Runs `hook` when the manager closes (before the backend is closed). */
  onClose(hook: () => Promise<void> | void): void {
    this.#closeHooks.push(hook)
  }

  /** True once `close()` was called. */
  get closed(): boolean {
    return this.#closed !== undefined
  }

  /**
   * Stops every subscription (in-flight messages settle up to their drain
   * timeout, acks are flushed), every promoter and timer, and closes the
   * connections. Idempotent.
   */
  close(): Promise<void> {
    this.#closed ??= this.#close()
    return this.#closed
  }

  async #close(): Promise<void> {
    this.#stopGauges()
    // Handlers started by subscribe() are this manager's: stop them first (in-flight work still settles).
    for (const subscription of this.#handlerSubscriptions) subscription.unsubscribe()
    this.#handlerSubscriptions.clear()
    // A graceful stop: unstarted messages are given back, started ones drain, each consume() completes.
    await Promise.all([...this.#subscriptions].map((s) => s.stop('close')))
    await Promise.all([...this.#closing])
    for (const { promoter } of this.#promoters.values()) promoter.stop()
    this.#promoters.clear()
    await this.#acker.flush()
    for (const hook of this.#closeHooks) await hook()
    await this.backend.close()
  }
}

/** What the manager logs about its connection: never the password or the URL. */
function describeConnection(config: Config): Record<string, unknown> {
  const { redis } = config
  return {
    mode: redis.mode,
    hosts: redis.hosts.map((h) => `${h.host}:${String(h.port)}`).join(','),
    db: redis.db,
    tls: redis.tls,
    auth: redis.password !== undefined,
  }
}

/**
 * Reports a lost connection once per outage: through the logger when one is
 * given, else `process.emitWarning`, so that a Redis that cannot be reached is
 * never silent.
 */
function connectionWarnings(logger: Logger | undefined): { onError: (error: Error) => void; onReady: () => void } {
  let warned = false
  return {
    onError: (error) => {
      if (warned) return
      warned = true
      if (logger !== undefined) logger.warn({ err: error }, `Redis connection failed: ${error.message}`)
      else process.emitWarning(`rx-redis-streams: Redis connection failed: ${error.message}`, { code: 'RRS_REDIS_UNREACHABLE' })
    },
    onReady: () => {
      warned = false
    },
  }
}

function createBackend(options: EventManagerOptions, config: Config, logger: Logger): StreamBackend {
  const backend = options.backend
  if (backend !== undefined && typeof backend === 'object') return backend
  if (backend === 'memory' || (backend === undefined && config.redis.mode === 'memory')) return new MemoryBackend()
  const warnings = connectionWarnings(options.logger === undefined ? undefined : logger)
  const onError = (error: Error): void => {
    if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|certificate|WRONGPASS|NOAUTH|unreachable|slots cache/i.test(error.message)) warnings.onError(error)
  }
  const timeout = config.commandTimeoutMs
  const user = options.redisClient
  const client =
    user === undefined ? createRedisClient(config, { onError }) : superviseClient(user, config, { commandTimeout: timeout, onError })
  client.on('ready', warnings.onReady)
  return new RedisBackend({
    client,
    // A user's client: its duplicates (same address, TLS, credentials), never a connection built from EVENT_REDIS_*.
    createBlockingClient: () => (user === undefined ? createBlockingClient(config, { onError }) : duplicateClient(user, config, { autoPipelining: false })),
    createControlClient: () =>
      user === undefined ? createControlClient(config) : duplicateClient(user, config, { autoPipelining: false, lazyConnect: true, commandTimeout: timeout }),
    ...(config.publishWaitReplicas > 0
      ? {
          waitReplicas: { count: config.publishWaitReplicas, timeoutMs: config.publishWaitTimeoutMs },
          // WAIT counts the writes of its own connection: appends then go through this one.
          createWriteClient: () =>
            user === undefined
              ? createBlockingClient(config, { commandTimeout: timeout, onError })
              : duplicateClient(user, config, { autoPipelining: false, commandTimeout: timeout }),
        }
      : {}),
    keyPrefix: config.keyPrefix,
    ownsClient: user === undefined,
    sanitizeError: (error) => sanitizeRedisError(error, config),
    logger,
  })
}

/**
 * Creates an event manager from an options object over the `EVENT_*`
 * environment (an option wins over its variable).
 *
 * @example
 * ```ts
 * import { createEventManager } from 'rx-redis-streams'
 * const events = createEventManager({ redisUrl: 'redis://localhost:6379', maxRetries: 5 })
 * const inMemory = createEventManager({ backend: 'memory' })
 * ```
 * @throws {ConfigError} listing every invalid option or variable
 */
export function createEventManager(options: EventManagerOptions = {}): EventManager {
  return new EventManager(options)
}
