import { randomBytes } from 'node:crypto'
import { DecodeError, PayloadTooLargeError, SerializationError } from './errors.js'

/**
 * An event: what is published to a topic and delivered to consumer groups.
 *
 * @example
 * ```ts
 * import { newEvent } from 'rx-redis-streams'
 * const evt = newEvent('user.signup', { userId: 123 }, { headers: { source: 'web-app' } })
 * evt.id        // time-sortable UUIDv7
 * evt.timestamp // ms since the epoch
 * ```
 */
export interface Event<P = unknown> {
  /** Unique, time-sortable id (UUIDv7 unless given). */
  readonly id: string
  /** Namespaced event name, such as `user.signup`. */
  readonly name: string
  /** Any JSON-serializable value. */
  readonly payload: P
  /** String metadata, for routing and filtering. */
  readonly headers: Readonly<Record<string, string>>
  /** Event time in milliseconds since the epoch. */
  readonly timestamp: number
  /** Correlation id linking the events of one causal chain (inherited while handling an event). */
  readonly correlationId?: string
}

/** Options of {@link newEvent}. */
export interface NewEventOptions {
  /** String metadata. */
  readonly headers?: Readonly<Record<string, string>>
  /** Event id; a UUIDv7 when omitted. */
  readonly id?: string
  /** Event time in ms; now when omitted. */
  readonly timestamp?: number
  /** Correlation id; when omitted, inherited from the event being handled (if any) at publish time. */
  readonly correlationId?: string
}

const EMPTY_HEADERS: Readonly<Record<string, string>> = Object.freeze({})

let lastMs = 0
let sequence = 0
/** Random bytes drawn 4 KiB at a time: one call into the CSPRNG per 512 ids instead of one per id. */
const POOL_SIZE = 4_096
let pool = Buffer.alloc(0)
let poolOffset = POOL_SIZE

function randomTail(): Buffer {
  if (poolOffset + 8 > pool.length) {
    pool = randomBytes(POOL_SIZE)
    poolOffset = 0
  }
  const tail = pool.subarray(poolOffset, poolOffset + 8)
  poolOffset += 8
  return tail
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))
const hex = (byte: number): string => HEX[byte & 0xff] ?? '00'

/**
 * A UUIDv7: 48 bits of milliseconds, then a 12-bit counter within the same
 * millisecond (monotonic within the process), then random bits.
 *
 * @example
 * ```ts
 * import { uuidv7 } from 'rx-redis-streams'
 * uuidv7() < uuidv7() // true: ids sort by creation time
 * ```
 */
export function uuidv7(now: number = Date.now()): string {
  if (now > lastMs) {
    lastMs = now
    sequence = 0
  } else {
    sequence++
    if (sequence > 0xfff) {
      lastMs++
      sequence = 0
    }
  }
  const ms = lastMs
  const r = randomTail()
  const high = Math.floor(ms / 2 ** 32)
  return (
    hex(high >>> 8) + hex(high) + hex(ms >>> 24) + hex(ms >>> 16) + '-' +
    hex(ms >>> 8) + hex(ms) + '-' +
    hex(0x70 | ((sequence >>> 8) & 0x0f)) + hex(sequence) + '-' +
    hex(0x80 | ((r[0] ?? 0) & 0x3f)) + hex(r[1] ?? 0) + '-' +
    hex(r[2] ?? 0) + hex(r[3] ?? 0) + hex(r[4] ?? 0) + hex(r[5] ?? 0) + hex(r[6] ?? 0) + hex(r[7] ?? 0)
  )
}

/**
 * Creates an event with a fresh UUIDv7 id and the current time.
 *
 * @example
 * ```ts
 * import { newEvent } from 'rx-redis-streams'
 * await events.publish('user-events', newEvent('user.signup', { userId: 123 }))
 * ```
 * @param name the event name, e.g. `order.created`
 * @param payload any JSON-serializable value
 * @param options headers, id, timestamp, correlation id
 * @returns a frozen event
 */
export function newEvent<P>(name: string, payload: P, options: NewEventOptions = {}): Event<P> {
  const event: { -readonly [K in keyof Event<P>]: Event<P>[K] } = {
    id: options.id ?? uuidv7(),
    name,
    payload,
    headers: options.headers === undefined ? EMPTY_HEADERS : Object.freeze({ ...options.headers }),
    timestamp: options.timestamp ?? Date.now(),
  }
  if (options.correlationId !== undefined) event.correlationId = options.correlationId
  return Object.freeze(event)
}

/** Stream entry field names (DESIGN.md §3). */
export const Fields = {
  id: 'id',
  name: 'name',
  ts: 'ts',
  headers: 'headers',
  payload: 'payload',
  correlationId: 'cid',
  traceparent: 'traceparent',
  /** Set by a dead-letter replay: only this group handles the entry; other groups ack it unseen. */
  replayGroup: 'replay_group',
} as const

/** Extra wire fields carried next to the event. */
export interface WireExtras {
  readonly traceparent?: string
}

/** `JSON.stringify`, typed honestly: undefined for `undefined`, functions and symbols. */
const stringifyJson: (value: unknown) => string | undefined = JSON.stringify


/**
 * Encodes an event into a flat stream field list `[field, value, ...]`, checking
 * everything before any I/O: name, headers (strings only), serializable payload
 * and its size.
 *
 * @throws {SerializationError} payload or headers that are not serializable
 * @throws {PayloadTooLargeError} payload over `maxPayloadBytes`
 */
export function encodeEvent(event: Event, maxPayloadBytes: number, extras: WireExtras = {}): string[] {
  if (typeof event.name !== 'string' || event.name.length === 0) {
    throw new SerializationError('an event needs a non-empty string name')
  }
  if (typeof event.id !== 'string' || event.id.length === 0) throw new SerializationError('an event needs a non-empty string id')
  if (!Number.isFinite(event.timestamp)) throw new SerializationError('an event timestamp must be a finite number')
  let headers = '{}'
  const h = event.headers as unknown
  if (h !== undefined && h !== null && h !== EMPTY_HEADERS) {
    if (typeof h !== 'object' || Array.isArray(h)) throw new SerializationError('headers must be an object of strings')
    let any = false
    const record = h as Record<string, unknown>
    for (const k in record) {
      if (!Object.hasOwn(record, k)) continue
      any = true
      const v = record[k]
      if (typeof v !== 'string') throw new SerializationError(`header ${JSON.stringify(k)} must be a string, got ${typeof v}`)
    }
    if (any) headers = JSON.stringify(h)
  }
  let payload: string | undefined
  try {
    payload = stringifyJson(event.payload)
  } catch (cause) {
    throw new SerializationError(`payload of ${event.name} is not serializable: ${(cause as Error).message}`, { cause })
  }
  if (payload === undefined) throw new SerializationError(`payload of ${event.name} is not serializable to JSON`)
  // A UTF-8 byte length is at most 3 per UTF-16 unit: measure only when it could matter.
  if (payload.length * 3 > maxPayloadBytes) {
    const bytes = Buffer.byteLength(payload, 'utf8')
    if (bytes > maxPayloadBytes) throw new PayloadTooLargeError(bytes, maxPayloadBytes)
  }
  const fields = [
    Fields.id, event.id,
    Fields.name, event.name,
    Fields.ts, String(event.timestamp),
    Fields.headers, headers,
    Fields.payload, payload,
  ]
  if (event.correlationId !== undefined) fields.push(Fields.correlationId, event.correlationId)
  if (extras.traceparent !== undefined) fields.push(Fields.traceparent, extras.traceparent)
  return fields
}

const UNSAFE_KEY = /"(?:__proto__|constructor|prototype)"\s*:/
const UNSAFE_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype'])

/** Whether JSON text may hold an unsafe key: spelled out, or hidden behind a `\u` escape (`"\u005f_proto__"`). */
const mayHoldUnsafeKey = (text: string): boolean => UNSAFE_KEY.test(text) || text.includes('\\u')

/**
 * Removes `__proto__`, `constructor` and `prototype` keys from parsed JSON, at
 * any depth. Iterative: a deeply nested payload must not overflow the stack.
 */
function stripUnsafeKeys(value: unknown): unknown {
  const pending: object[] = []
  const visit = (child: unknown): void => {
    if (child !== null && typeof child === 'object') pending.push(child)
  }
  visit(value)
  for (let node = pending.pop(); node !== undefined; node = pending.pop()) {
    if (Array.isArray(node)) {
      for (const item of node as unknown[]) visit(item)
      continue
    }
    const record = node as Record<string, unknown>
    for (const key of Object.keys(record)) {
      if (UNSAFE_KEYS.has(key)) Reflect.deleteProperty(record, key)
      else visit(record[key])
    }
  }
  return value
}

/**
 * Parses untrusted JSON: `__proto__`, `constructor` and `prototype` keys are
 * dropped so that no later merge of the value can pollute a prototype.
 *
 * @example
 * ```ts
 * import { safeJsonParse } from 'rx-redis-streams'
 * safeJsonParse('{"__proto__":{"polluted":1},"a":1}') // { a: 1 }
 * ```
 * @throws {DecodeError} with reason `malformed_json`
 */
export function safeJsonParse(text: string): unknown {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (cause) {
    throw new DecodeError('malformed_json', (cause as Error).message, { cause })
  }
  return mayHoldUnsafeKey(text) ? stripUnsafeKeys(value) : value
}

/** The fields of one stream entry, read as untrusted input. */
export type EntryFields = readonly string[] | Readonly<Record<string, string>>

/** The known fields of one entry; the first occurrence of a field wins. */
interface WireParts {
  id?: string
  name?: string
  ts?: string
  headers?: string
  payload?: string
  cid?: string
  traceparent?: string
  replayGroup?: string
}

function takeField(parts: WireParts, k: unknown, v: unknown): void {
  if (typeof k !== 'string' || typeof v !== 'string') return
  switch (k) {
    case Fields.id: parts.id ??= v; break
    case Fields.name: parts.name ??= v; break
    case Fields.ts: parts.ts ??= v; break
    case Fields.headers: parts.headers ??= v; break
    case Fields.payload: parts.payload ??= v; break
    case Fields.correlationId: parts.cid ??= v; break
    case Fields.traceparent: parts.traceparent ??= v; break
    case Fields.replayGroup: parts.replayGroup ??= v; break
    default: break
  }
}

/** Picks the known fields out of a flat list or a record (a hot path: no intermediate map). */
function wireParts(entryFields: EntryFields): WireParts {
  const parts: WireParts = {}
  const fields: unknown = entryFields // untrusted: the declared type is a hope, not a guarantee
  if (Array.isArray(fields)) {
    const list = fields as readonly unknown[]
    for (let i = 0; i + 1 < list.length; i += 2) takeField(parts, list[i], list[i + 1])
  } else if (fields !== null && typeof fields === 'object') {
    for (const [k, v] of Object.entries(fields)) takeField(parts, k, v)
  }
  return parts
}

/**
 * An event read from a stream. The payload is parsed on first access, so
 * pipelines that only look at the name and headers never pay for it.
 * Reading `payload` throws a {@link DecodeError} when the JSON is malformed.
 */
export class StoredEvent<P = unknown> implements Event<P> {
  readonly id: string
  readonly name: string
  readonly headers: Readonly<Record<string, string>>
  readonly timestamp: number
  readonly correlationId?: string
  /** W3C trace context of the producer, when tracing was on. */
  readonly traceparent?: string
  /** The raw JSON of the payload. */
  readonly rawPayload: string
  #parsed = false
  #payload: unknown

  constructor(parts: {
    id: string
    name: string
    headers: Readonly<Record<string, string>>
    timestamp: number
    rawPayload: string
    correlationId: string | undefined
    traceparent: string | undefined
  }) {
    this.id = parts.id
    this.name = parts.name
    this.headers = parts.headers
    this.timestamp = parts.timestamp
    this.rawPayload = parts.rawPayload
    if (parts.correlationId !== undefined) this.correlationId = parts.correlationId
    if (parts.traceparent !== undefined) this.traceparent = parts.traceparent
  }

  /** The payload, parsed (safely) on first access. @throws {DecodeError} */
  get payload(): P {
    if (!this.#parsed) {
      this.#payload = safeJsonParse(this.rawPayload)
      this.#parsed = true
    }
    return this.#payload as P
  }

  toJSON(): Event<P> {
    const out: { -readonly [K in keyof Event<P>]: Event<P>[K] } = {
      id: this.id,
      name: this.name,
      payload: this.payload,
      headers: this.headers,
      timestamp: this.timestamp,
    }
    if (this.correlationId !== undefined) out.correlationId = this.correlationId
    return out
  }
}

/** An event decoded from a stream entry, plus wire-only fields. */
export interface DecodedEntry {
  readonly event: StoredEvent
  /** When set, only this consumer group handles the entry (a targeted DLQ replay). */
  readonly replayGroup: string | undefined
}

/**
 * Decodes stream entry fields (untrusted) into an event. Checks presence and
 * types of every field and the payload size; the payload JSON itself is parsed
 * lazily by {@link StoredEvent.payload}.
 *
 * @throws {DecodeError} with a reason code; never anything else
 */
export function decodeEntry(fields: EntryFields, maxPayloadBytes: number): DecodedEntry {
  const { id, name, ts, headers: rawHeaders, payload: rawPayload, cid, traceparent, replayGroup } = wireParts(fields)
  if (id === undefined || id.length === 0) throw new DecodeError('missing_field', 'field "id" is missing')
  if (name === undefined || name.length === 0) throw new DecodeError('missing_field', 'field "name" is missing')
  if (rawPayload === undefined) throw new DecodeError('missing_field', 'field "payload" is missing')
  let timestamp = Date.now()
  if (ts !== undefined) {
    timestamp = Number(ts)
    if (ts.length === 0 || !Number.isFinite(timestamp)) throw new DecodeError('invalid_field', `field "ts" is not a number`)
  }
  if (rawPayload.length * 3 > maxPayloadBytes) {
    const bytes = Buffer.byteLength(rawPayload, 'utf8')
    if (bytes > maxPayloadBytes) {
      throw new DecodeError('payload_too_large', `payload of ${bytes} bytes exceeds the limit of ${maxPayloadBytes} bytes`)
    }
  }
  let headers = EMPTY_HEADERS
  if (rawHeaders !== undefined && rawHeaders !== '{}' && rawHeaders.length > 0) {
    const parsed = safeJsonParse(rawHeaders)
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new DecodeError('invalid_headers', 'headers must be a JSON object')
    }
    const clean: Record<string, string> = Object.create(null) as Record<string, string>
    for (const [k, v] of Object.entries(parsed)) {
      if (typeof v !== 'string') throw new DecodeError('invalid_headers', `header ${JSON.stringify(k)} is not a string`)
      clean[k] = v
    }
    headers = Object.freeze(clean)
  }
  return {
    event: new StoredEvent({
      id,
      name,
      headers,
      timestamp,
      rawPayload,
      correlationId: cid,
      traceparent,
    }),
    replayGroup,
  }
}
