import type { Attributes } from '@opentelemetry/api'
import type { StreamBackend } from './backend/types.js'
import type { Config } from './config/types.js'
import { inheritedCorrelationId } from './context.js'
import { SerializationError } from './errors.js'
import { encodeEvent, newEvent, type Event, type WireExtras } from './event.js'
import { messagingAttributes, type Instruments } from './telemetry/instruments.js'
import { validateTopic } from './topic.js'

/** Adds wire extras (the trace context) to an event being published; set by telemetry. */
export type PublishHook = (topic: string, event: Event) => WireExtras

/**
 * Publishes events to topics. Every check (topic name, serializable payload,
 * depth, size) happens before any I/O; a batch is written all or nothing.
 *
 * Retry-safe: a publish whose outcome is unknown (a timeout, or a connection
 * lost after the command was sent) rejects with `PublishOutcomeUnknownError`;
 * publishing the same event again (same `id`) within the dedupe window
 * (`EVENT_PUBLISH_DEDUPE_WINDOW`, default 5 minutes) appends it once and
 * resolves to the stream id it was first appended under.
 *
 * @example
 * ```ts
 * import { createEventManager, newEvent } from 'rx-redis-streams'
 * const events = createEventManager()
 * const [id] = await events.publisher.publishBatch('analytics', [newEvent('a', 1), newEvent('b', 2)])
 * ```
 */
export interface EventPublisher {
  /** Appends one event; resolves to its stream id. */
  publish(topic: string, event: Event): Promise<string>
  /** Appends events in one round trip, atomically; resolves to their stream ids. */
  publishBatch(topic: string, events: readonly Event[]): Promise<string[]>
  /** Makes the event visible to consumers after `delayMs` (a `RangeError` unless ≥ 0); resolves to the event id (for `cancelDelayed`). */
  publishWithDelay(topic: string, event: Event, delayMs: number): Promise<string>
  /** Makes the event visible to consumers at `date`; resolves to the event id. */
  publishAt(topic: string, event: Event, date: Date | number): Promise<string>
  /** Cancels a delayed event that is not yet due; true if it was waiting. */
  cancelDelayed(topic: string, eventId: string): Promise<boolean>
  /** A batch publisher for one topic. */
  batch(topic: string): BatchPublisher
}

/** Engine-side publishing; used by the event manager. */
export class Publisher implements EventPublisher {
  readonly #backend: StreamBackend
  readonly #config: Config
  readonly #instruments: Instruments
  readonly #hook: PublishHook | undefined
  readonly #onDelayed: (topic: string, dueAt: number) => void
  readonly #retention: { readonly maxLen?: number }
  /** The retry-safe append's options, or undefined when the window is 0 (or the store cannot deduplicate). */
  readonly #dedupe: { readonly windowMs: number; readonly maxLen?: number } | undefined
  readonly #attributeCache = new Map<string, Attributes>()

  constructor(options: {
    backend: StreamBackend
    config: Config
    instruments: Instruments
    hook?: PublishHook
    onDelayed?: (topic: string, dueAt: number) => void
  }) {
    this.#backend = options.backend
    this.#config = options.config
    this.#instruments = options.instruments
    this.#hook = options.hook
    this.#onDelayed = options.onDelayed ?? (() => undefined)
    this.#retention = options.config.streamMaxLen === undefined ? {} : { maxLen: options.config.streamMaxLen }
    const windowMs = options.config.publishDedupeWindowMs
    this.#dedupe = windowMs > 0 && options.backend.appendOnce !== undefined ? { windowMs, ...this.#retention } : undefined
  }

  /** The event with the correlation id inherited from the handling in progress, if it has none (`inherited`: looked up once per batch). */
  #prepare(event: Event, inherited: string | undefined): Event {
    if (event.correlationId !== undefined || inherited === undefined) return event
    return { ...event, correlationId: inherited }
  }

  #encodeOne(topic: string, e: unknown, inherited: string | undefined): string[] {
    if (e === null || typeof e !== 'object') throw new SerializationError('an event must be an object (see newEvent)')
    const event = this.#prepare(e as Event, inherited)
    return encodeEvent(event, this.#config.maxPayloadBytes, this.#hook?.(topic, event), this.#config.maxPayloadDepth, this.#config.wireFormat)
  }

  #encode(topic: string, events: readonly Event[]): string[][] {
    validateTopic(topic)
    if (!Array.isArray(events)) throw new SerializationError('publishBatch takes an array of events')
    const inherited = inheritedCorrelationId()
    return events.map((e: unknown) => this.#encodeOne(topic, e, inherited))
  }

  /** Messaging attributes per topic, built once (publishing is a hot path). */
  #attributes(topic: string): Attributes {
    let attributes = this.#attributeCache.get(topic)
    if (attributes === undefined) {
      attributes = messagingAttributes(topic)
      if (this.#attributeCache.size < 10_000) this.#attributeCache.set(topic, attributes)
    }
    return attributes
  }

  publish(topic: string, event: Event): Promise<string> {
    let fields: string[]
    try {
      validateTopic(topic)
      fields = this.#encodeOne(topic, event, inheritedCorrelationId())
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new SerializationError(String(error)))
    }
    // One continuation per publish: the first id of the reply, counted as sent.
    const first = (ids: readonly string[]): string => {
      this.#instruments.sent.add(1, this.#attributes(topic))
      return ids[0] as string
    }
    if (this.#dedupe !== undefined && this.#backend.appendOnce !== undefined) return this.#backend.appendOnce(topic, [{ eventId: event.id, fields }], this.#dedupe).then(first)
    if (this.#backend.appendOne === undefined) return this.#backend.append(topic, [fields], this.#retention).then(first)
    return this.#backend.appendOne(topic, fields, this.#retention).then((id) => {
      this.#instruments.sent.add(1, this.#attributes(topic))
      return id
    })
  }

  async publishBatch(topic: string, events: readonly Event[]): Promise<string[]> {
    const fields = this.#encode(topic, events)
    if (fields.length === 0) return []
    const ids = this.#dedupe !== undefined && this.#backend.appendOnce !== undefined
      ? await this.#backend.appendOnce(topic, fields.map((f, i) => ({ eventId: (events[i] as Event).id, fields: f })), this.#dedupe)
      : await this.#backend.append(topic, fields, this.#retention)
    this.#instruments.sent.add(ids.length, this.#attributes(topic))
    return ids
  }

  publishWithDelay(topic: string, event: Event, delayMs: number): Promise<string> {
    if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) {
      return Promise.reject(new RangeError(`delay must be a finite number of ms ≥ 0, got ${String(delayMs)}`))
    }
    return this.publishAt(topic, event, Date.now() + delayMs)
  }

  async publishAt(topic: string, event: Event, date: Date | number): Promise<string> {
    const dueAt = typeof date === 'number' ? date : date.getTime()
    if (!Number.isFinite(dueAt)) throw new RangeError('publishAt needs a valid date or a finite time in ms')
    const [fields] = this.#encode(topic, [event])
    await this.#backend.schedule(topic, [{ eventId: event.id, dueAt: Math.floor(dueAt), fields: fields as string[] }])
    this.#onDelayed(topic, dueAt)
    return event.id
  }

  cancelDelayed(topic: string, eventId: string): Promise<boolean> {
    validateTopic(topic)
    return this.#backend.cancelScheduled(topic, eventId)
  }

  batch(topic: string): BatchPublisher {
    return new BatchPublisher(this, topic)
  }
}

/**
 * Collects events for one topic and publishes them in one atomic round trip.
 *
 * @example
 * ```ts
 * const batch = events.publisher.batch('analytics')
 * batch.addJSON('user.action', { click: 1 })
 * batch.add(newEvent('user.action', { click: 2 }))
 * const ids = await batch.publish()
 * ```
 */
export class BatchPublisher {
  readonly #publisher: EventPublisher
  readonly #topic: string
  #events: Event[] = []

  constructor(publisher: EventPublisher, topic: string) {
    validateTopic(topic)
    this.#publisher = publisher
    this.#topic = topic
  }

  /** Adds an event. */
  add(event: Event): this {
    this.#events.push(event)
    return this
  }

  /** Adds a new event built from a name, a JSON payload and headers. */
  addJSON(name: string, payload: unknown, headers?: Readonly<Record<string, string>>): this {
    this.#events.push(newEvent(name, payload, headers === undefined ? {} : { headers }))
    return this
  }

  /** Events waiting. */
  get size(): number {
    return this.#events.length
  }

  /** Publishes every added event at once and clears the batch; resolves to their stream ids. */
  async publish(): Promise<string[]> {
    const events = this.#events
    this.#events = []
    try {
      return await this.#publisher.publishBatch(this.#topic, events)
    } catch (error) {
      this.#events = events.concat(this.#events)
      throw error
    }
  }
}
