import { Observable } from 'rxjs'
import { handleEach, type Handled, type Handler, type HandleEachOptions } from '../operators/handle-each.js'
import { matchPattern, type EventPattern } from '../operators/match-pattern.js'
import { MemoryBackend } from './backend/memory/index.js'
import { createBlockingClient, createRedisClient, sanitizeRedisError } from './backend/redis/connection.js'
import { RedisBackend, type RedisClient } from './backend/redis/redis-backend.js'
import type { StreamBackend } from './backend/types.js'
import { loadConfig, type ConfigOptions } from './config/index.js'
import type { Config } from './config/types.js'
import { AckBatcher } from './consumer/acker.js'
import type { Message } from './consumer/message.js'
import { Subscription, type ConsumeOptions, type EngineContext, type SubscriptionStatus } from './consumer/subscription.js'
import { DeadLetterQueue } from './dead-letter.js'
import { DelayedPromoter } from './delayed.js'
import { ClosedError } from './errors.js'
import type { Event } from './event.js'
import { silentLogger, type Logger } from './logger.js'
import { Publisher, type BatchPublisher, type EventPublisher, type PublishHook } from './publisher.js'
import { createInstruments, type Instruments } from './telemetry/instruments.js'
import { validateName, validateTopic } from './topic.js'

/**
 * Options of {@link createEventManager}: every configuration option (the
 * `EVENT_*` variables in camelCase; an option wins over its variable), plus
 * the logger and the backend.
 */
export interface EventManagerOptions extends ConfigOptions {
  /** Any pino logger; default silent. Child loggers carry topic, group and consumer. */
  readonly logger?: Logger
  /** `redis` (default), `memory` (in-process, no Redis), or a backend instance. */
  readonly backend?: 'redis' | 'memory' | StreamBackend
  /** Use this ioredis client instead of creating one (it is not closed by `close()`). */
  readonly redisClient?: RedisClient
  /** Environment to read `EVENT_*` from; default `process.env`. */
  readonly env?: NodeJS.ProcessEnv
  /** Adds wire extras (trace context) to published events. Set by the telemetry module. */
  readonly publishHook?: PublishHook
}

/** A topic: publish to it, or consume it as a cold Observable. */
export interface Topic {
  readonly name: string
  /**
   * A cold Observable of messages for one consumer of `group`: nothing happens
   * until it is subscribed; each subscription is one consumer; unsubscribing
   * stops pulling, lets in-flight messages settle and flushes acks.
   */
  consume(options: ConsumeOptions): Observable<Message>
  /** Publishes one event to this topic. */
  publish(event: Event): Promise<string>
}

/** The consuming side alone (the original spec's `EventConsumer`). */
export interface EventConsumer {
  topic(name: string): Topic
}

/** Options of {@link EventManager.subscribe}: consumption, handling, and an optional pattern. */
export interface SubscribeOptions extends Omit<ConsumeOptions, 'group'>, HandleEachOptions {
  /** Only events matching this are handled; the others are acked. */
  readonly pattern?: EventPattern
  /** Called with each settled message (for logging or tests). */
  readonly onSettled?: (handled: Handled) => void
}

/** A running handler subscription. */
export interface HandlerSubscription {
  /** Stops consuming; resolves when in-flight messages settled (up to the drain timeout) and acks are flushed. */
  unsubscribe(): Promise<void>
}

/** What `health()` and `stats()` need from the manager's internals. */
export interface ManagerInternals {
  readonly backend: StreamBackend
  readonly config: Config
  readonly logger: Logger
  subscriptions(): SubscriptionStatus[]
  promoters(): { topic: string; alive: boolean; lastRunAt: number | null }[]
}

/**
 * Publishes events, opens topics, manages dead letters, and closes everything.
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
  /** The logger given (or a silent one). */
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
  readonly #promoters = new Map<string, { promoter: DelayedPromoter; refs: number }>()
  readonly #closing = new Set<Promise<void>>()
  readonly #closeHooks: (() => Promise<void> | void)[] = []
  #closed: Promise<void> | undefined

  constructor(options: EventManagerOptions = {}) {
    this.logger = options.logger ?? silentLogger()
    this.config = loadConfig(options, options.env ?? process.env, this.logger)
    this.backend = createBackend(options, this.config)
    this.#instruments = createInstruments()
    this.#acker = new AckBatcher(this.backend, this.logger)
    this.#publisher = new Publisher({
      backend: this.backend,
      config: this.config,
      instruments: this.#instruments,
      ...(options.publishHook === undefined ? {} : { hook: options.publishHook }),
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
    this.publisher = this.#publisher
    this.deadLetters = new DeadLetterQueue(this.backend, this.config)
    this.consumer = { topic: (name) => this.topic(name) }
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
      onClosed: (s) => this.#subscriptions.delete(s),
    }
  }

  #assertOpen(what: string): void {
    if (this.#closed) throw new ClosedError(what)
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
      publish: (event) => this.publish(name, event),
    }
  }

  #consume(topic: string, options: ConsumeOptions): Observable<Message> {
    validateName('group', options.group)
    if (options.consumer !== undefined) validateName('consumer', options.consumer)
    for (const key of ['batchSize', 'maxPendingMessages'] as const) {
      const v = options[key]
      if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new RangeError(`${key} must be a positive integer, got ${String(v)}`)
    }
    return new Observable<Message>((subscriber) => {
      if (this.#closed) {
        subscriber.error(new ClosedError('event manager'))
        return
      }
      const subscription = new Subscription(this.#engine(), topic, options, subscriber)
      this.#subscriptions.add(subscription)
      subscription.start()
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
    const subscription = messages$.pipe(handleEach(handler, handling)).subscribe({
      next: (handled) => onSettled?.(handled as Handled),
      error: (error: unknown) => this.logger.error({ err: error, topic, group }, 'subscription failed'),
    })
    return {
      unsubscribe: async () => {
        subscription.unsubscribe()
        await Promise.all([...this.#closing])
      },
    }
  }

  publish(topic: string, event: Event): Promise<string> {
    this.#assertOpen('event manager')
    return this.#publisher.publish(topic, event)
  }

  publishBatch(topic: string, events: readonly Event[]): Promise<string[]> {
    this.#assertOpen('event manager')
    return this.#publisher.publishBatch(topic, events)
  }

  publishWithDelay(topic: string, event: Event, delayMs: number): Promise<string> {
    this.#assertOpen('event manager')
    return this.#publisher.publishWithDelay(topic, event, delayMs)
  }

  publishAt(topic: string, event: Event, date: Date | number): Promise<string> {
    this.#assertOpen('event manager')
    return this.#publisher.publishAt(topic, event, date)
  }

  cancelDelayed(topic: string, eventId: string): Promise<boolean> {
    return this.#publisher.cancelDelayed(topic, eventId)
  }

  batch(topic: string): BatchPublisher {
    return this.#publisher.batch(topic)
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
    await Promise.all([...this.#subscriptions].map((s) => s.stop()))
    await Promise.all([...this.#closing])
    for (const { promoter } of this.#promoters.values()) promoter.stop()
    this.#promoters.clear()
    await this.#acker.flush()
    for (const hook of this.#closeHooks) await hook()
    await this.backend.close()
  }
}

function createBackend(options: EventManagerOptions, config: Config): StreamBackend {
  const backend = options.backend
  if (backend !== undefined && typeof backend === 'object') return backend
  if (backend === 'memory' || (backend === undefined && config.redis.mode === 'memory')) return new MemoryBackend()
  const client = options.redisClient ?? createRedisClient(config)
  return new RedisBackend({
    client,
    createBlockingClient: () => createBlockingClient(config),
    keyPrefix: config.keyPrefix,
    ownsClient: options.redisClient === undefined,
    sanitizeError: (error) => sanitizeRedisError(error, config),
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
