import { randomBytes } from 'node:crypto'
import { DecodeError, PayloadTooDeepError, PayloadTooLargeError, SerializationError } from './errors.js'

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

/** Stream entry field names (README, "Redis layout"). */
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
  /** The compact layout's envelope: a JSON array `[id, name, ts, headers, cid?, traceparent?]` (next to `payload`). */
  meta: 'meta',
} as const

/**
 * The layout of a stream entry an event is written in. Readers read both.
 * - `'fields'`: one field per part, `id`, `name`, `ts`, `headers`, `payload`
 *   (plus `cid`, `traceparent`): what every version of this library reads.
 * - `'compact'`: two fields, `meta` (a JSON array `[id, name, ts, headers]`,
 *   then `cid` and `traceparent` when set; `null` for an absent `cid` before a
 *   `traceparent`) and `payload`: fewer bulk strings for the client to write
 *   and parse (about 40 % less decode work per entry on the reader).
 *
 * @example
 * ```ts
 * import { encodeEvent, newEvent } from 'rx-redis-streams'
 * encodeEvent(newEvent('a', 1, { id: 'e1', timestamp: 5 }), 1024, {}, 64, 'compact')
 * // ['meta', '["e1","a",5,{}]', 'payload', '1']
 * ```
 */
export type WireFormat = 'fields' | 'compact'

/** Extra wire fields carried next to the event. */
export interface WireExtras {
  readonly traceparent?: string
}

/** `JSON.stringify`, typed honestly: undefined for `undefined`, functions and symbols. */
const stringifyJson: (value: unknown) => string | undefined = JSON.stringify

/** The default of `EVENT_MAX_PAYLOAD_DEPTH`: containers (objects, arrays) nested in one payload. */
export const DEFAULT_MAX_PAYLOAD_DEPTH = 64

/** Built-ins that `JSON.stringify` turns into `{}` (or worse) without a word. */
const NOT_JSON: readonly [abstract new (...args: never[]) => object, string][] = [
  [Map, 'a Map'],
  [Set, 'a Set'],
  [WeakMap, 'a WeakMap'],
  [WeakSet, 'a WeakSet'],
  [RegExp, 'a RegExp'],
  [Promise, 'a Promise'],
  [ArrayBuffer, 'an ArrayBuffer'],
  [Error, 'an Error'],
]

/** `$.a[0].b`-style path of a value inside the payload. */
function pathText(path: readonly (string | number)[]): string {
  let out = '$'
  for (const key of path) {
    out += typeof key === 'number' ? `[${String(key)}]` : /^[A-Za-z_$][\w$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`
  }
  return out
}

/** A string, a boolean, a finite number or null: a JSON value with nothing inside to check. */
const isPlainJsonScalar = (value: unknown): boolean =>
  typeof value === 'string' || typeof value === 'boolean' || value === null || (typeof value === 'number' && Number.isFinite(value))

/**
 * Checks that a payload is a JSON value before it is stringified: objects,
 * arrays, strings, finite numbers, booleans and null; `undefined` properties
 * are dropped and values with `toJSON` (Date) use it, as `JSON.stringify`
 * does. Anything `JSON.stringify` would silently change or drop is refused.
 */
function checkJsonValue(value: unknown, maxDepth: number, path: (string | number)[], ancestors: object[]): void {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return
    case 'number':
      if (!Number.isFinite(value)) throw new SerializationError(`payload at ${pathText(path)} is ${String(value)}, which JSON cannot represent`)
      return
    case 'bigint':
      throw new SerializationError(`payload at ${pathText(path)} is a BigInt, which JSON cannot represent (send it as a string)`)
    case 'function':
      throw new SerializationError(`payload at ${pathText(path)} is a function, which JSON cannot represent`)
    case 'symbol':
      throw new SerializationError(`payload at ${pathText(path)} is a symbol, which JSON cannot represent`)
    case 'undefined':
      throw new SerializationError(`payload at ${pathText(path)} is undefined, which JSON cannot represent`)
    default:
      break
  }
  if (value === null) return
  const object = value as object
  const toJSON = (object as { toJSON?: unknown }).toJSON
  if (typeof toJSON === 'function') {
    if (object instanceof Date && Number.isNaN(object.getTime())) throw new SerializationError(`payload at ${pathText(path)} is an invalid Date`)
    let replaced: unknown
    try {
      replaced = toJSON.call(object, path.length === 0 ? '' : String(path[path.length - 1]))
    } catch (cause) {
      throw new SerializationError(`payload at ${pathText(path)}: its toJSON() threw: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
    }
    if (replaced !== object) checkJsonValue(replaced, maxDepth, path, ancestors)
    return
  }
  if (ancestors.includes(object)) throw new SerializationError(`payload at ${pathText(path)} is a cycle (it contains itself)`)
  if (ancestors.length >= maxDepth) throw new PayloadTooDeepError(maxDepth, pathText(path))
  if (Array.isArray(object)) {
    ancestors.push(object)
    const list = object as unknown[]
    for (let i = 0; i < list.length; i++) {
      const child = list[i]
      if (isPlainJsonScalar(child)) continue // the common case, without a path entry or a call
      path.push(i)
      checkJsonValue(child, maxDepth, path, ancestors)
      path.pop()
    }
    ancestors.pop()
    return
  }
  const proto: unknown = Object.getPrototypeOf(object)
  if (proto !== Object.prototype && proto !== null) {
    for (const [type, described] of NOT_JSON) {
      if (object instanceof type) throw new SerializationError(`payload at ${pathText(path)} is ${described}, which JSON cannot represent`)
    }
    if (ArrayBuffer.isView(object)) throw new SerializationError(`payload at ${pathText(path)} is a binary view, which JSON cannot represent (send it as base64)`)
  }
  ancestors.push(object)
  const record = object as Record<string, unknown>
  for (const key of Object.keys(record)) {
    const child = record[key]
    if (child === undefined || isPlainJsonScalar(child)) continue // undefined is dropped, as JSON.stringify does
    path.push(key)
    checkJsonValue(child, maxDepth, path, ancestors)
    path.pop()
  }
  ancestors.pop()
}

/**
 * Throws unless `payload` is a JSON value nested at most `maxDepth` deep (see
 * {@link encodeEvent} for what is accepted).
 *
 * @example
 * ```ts
 * import { assertJsonPayload } from 'rx-redis-streams'
 * assertJsonPayload({ at: new Date(), tags: ['a'] }) // fine
 * assertJsonPayload({ ids: new Set([1]) })           // SerializationError: payload at $.ids is a Set...
 * ```
 * @throws {SerializationError} naming the path of the first value JSON cannot represent
 * @throws {PayloadTooDeepError} nested deeper than `maxDepth`
 */
export function assertJsonPayload(payload: unknown, maxDepth: number = DEFAULT_MAX_PAYLOAD_DEPTH): void {
  checkJsonValue(payload, maxDepth, [], [])
}

/** Whether the text holds more than `limit` `{` and `[` (strings included): native searches, no per-character loop. */
function hasMoreOpenersThan(text: string, limit: number): boolean {
  let count = 0
  for (let i = text.indexOf('{'); i !== -1; i = text.indexOf('{', i + 1)) if (++count > limit) return true
  for (let i = text.indexOf('['); i !== -1; i = text.indexOf('[', i + 1)) if (++count > limit) return true
  return false
}

/**
 * Whether JSON text nests containers deeper than `maxDepth`. A scan of the text
 * before parsing it: a hostile entry nested 100,000 deep is refused without
 * building it.
 */
export function jsonDepthExceeds(text: string, maxDepth: number): boolean {
  // Each level needs an opening and a closing bracket, and at most as many
  // levels as opening brackets: most payloads are ruled out without a scan.
  if (text.length <= 2 * maxDepth || !hasMoreOpenersThan(text, maxDepth)) return false
  let depth = 0
  const n = text.length
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x22) {
      // a string: skip to its closing quote
      for (i++; i < n; i++) {
        const d = text.charCodeAt(i)
        if (d === 0x5c) i++
        else if (d === 0x22) break
      }
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > maxDepth) return true
    } else if (c === 0x7d || c === 0x5d) {
      depth--
    }
  }
  return false
}


/**
 * Encodes an event into a flat stream field list `[field, value, ...]`, checking
 * everything before any I/O: name, headers (strings only), serializable payload,
 * its depth and its size.
 *
 * Accepted payloads are JSON values: objects, arrays, strings, finite numbers,
 * booleans and null; `undefined` properties are dropped and a `Date` becomes its
 * ISO string, as `JSON.stringify` does. Map, Set, BigInt, functions, symbols,
 * NaN, ±Infinity, cycles and `undefined` in arrays are refused, naming the path.
 *
 * @example
 * ```ts
 * import { encodeEvent, newEvent } from 'rx-redis-streams'
 * encodeEvent(newEvent('order.placed', { total: 12 }), 1024 * 1024) // ['id', '…', 'name', 'order.placed', …]
 * ```
 * @throws {SerializationError} payload or headers that are not serializable
 * @throws {PayloadTooDeepError} payload nested deeper than `maxPayloadDepth`
 * @throws {PayloadTooLargeError} payload over `maxPayloadBytes`
 */
export function encodeEvent(
  event: Event,
  maxPayloadBytes: number,
  extras: WireExtras = {},
  maxPayloadDepth: number = DEFAULT_MAX_PAYLOAD_DEPTH,
  format: WireFormat = 'fields',
): string[] {
  if (typeof event.name !== 'string' || event.name.length === 0) {
    throw new SerializationError('an event needs a non-empty string name')
  }
  if (typeof event.id !== 'string' || event.id.length === 0) throw new SerializationError('an event needs a non-empty string id')
  if (typeof event.timestamp !== 'number' || !Number.isFinite(event.timestamp)) throw new SerializationError('an event timestamp must be a finite number')
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
  // Headers are capped like the payload (a reader refuses larger ones as malformed).
  if (headers.length * 3 > maxPayloadBytes) {
    const bytes = Buffer.byteLength(headers, 'utf8')
    if (bytes > maxPayloadBytes) throw new PayloadTooLargeError(bytes, maxPayloadBytes, 'headers')
  }
  assertJsonPayload(event.payload, maxPayloadDepth)
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
  if (format === 'compact') {
    let meta = `[${JSON.stringify(event.id)},${JSON.stringify(event.name)},${String(event.timestamp)},${headers}`
    if (event.correlationId !== undefined || extras.traceparent !== undefined) {
      meta += event.correlationId === undefined ? ',null' : `,${JSON.stringify(event.correlationId)}`
      if (extras.traceparent !== undefined) meta += `,${JSON.stringify(extras.traceparent)}`
    }
    meta += ']'
    // The reader caps meta (the envelope with the headers) at the payload limit.
    if (tooLarge(meta, maxPayloadBytes)) throw new PayloadTooLargeError(Buffer.byteLength(meta, 'utf8'), maxPayloadBytes, 'headers')
    return [Fields.meta, meta, Fields.payload, payload]
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

const UNSAFE_KEY = /"(?:__proto__|constructor)"\s*:/

/** Whether JSON text may hold an unsafe key: spelled out, or hidden behind a `\u` escape (`"\u005f_proto__"`). */
const mayHoldUnsafeKey = (text: string): boolean => UNSAFE_KEY.test(text) || text.includes('\\u')

/** A `constructor` key whose value holds a `prototype` key: `obj.constructor.prototype` reaches a real prototype after a merge. */
const isConstructorVector = (record: Record<string, unknown>, key: string): boolean => {
  if (key !== 'constructor') return false
  const value = record[key]
  return value !== null && typeof value === 'object' && Object.hasOwn(value, 'prototype')
}

/**
 * Removes the prototype-pollution vectors from parsed JSON, at any depth:
 * `__proto__` keys, and `constructor` keys whose value has a `prototype` key
 * (the rules of secure-json-parse). Every other key — a plain `constructor`
 * or `prototype` among them — is data and stays. Iterative: a deeply nested
 * payload must not overflow the stack.
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
      if (key === '__proto__' || isConstructorVector(record, key)) Reflect.deleteProperty(record, key)
      else visit(record[key])
    }
  }
  return value
}

/**
 * Parses untrusted JSON: `__proto__` keys and `constructor` keys holding a
 * `prototype` are dropped so that no later merge of the value can pollute a
 * prototype; every other key (a plain `constructor` or `prototype` too) stays.
 *
 * @example
 * ```ts
 * import { safeJsonParse } from 'rx-redis-streams'
 * safeJsonParse('{"__proto__":{"polluted":1},"a":1}')           // { a: 1 }
 * safeJsonParse('{"constructor":"Acme","prototype":"v2"}')       // kept as it is
 * safeJsonParse('[[[1]]]', { maxDepth: 2 })                      // DecodeError: payload_too_deep
 * ```
 * @param text the JSON text
 * @param options `maxDepth`: containers nested at most this deep (unlimited when omitted)
 * @throws {DecodeError} with reason `malformed_json`, or `payload_too_deep`
 */
export function safeJsonParse(text: string, options: { readonly maxDepth?: number } = {}): unknown {
  return parseJsonSafely(text, options.maxDepth)
}

/** {@link safeJsonParse} without an options object (a payload's first read). */
function parseJsonSafely(text: string, maxDepth: number | undefined): unknown {
  if (maxDepth !== undefined && jsonDepthExceeds(text, maxDepth)) {
    throw new DecodeError('payload_too_deep', `JSON nested deeper than ${String(maxDepth)} levels`)
  }
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

/** The known fields of one entry. A known field given twice makes the entry malformed. */
interface WireParts {
  id?: string
  name?: string
  ts?: string
  headers?: string
  payload?: string
  cid?: string
  traceparent?: string
  replayGroup?: string
  meta?: string
}

const duplicate = (field: string): DecodeError =>
  new DecodeError('duplicate_field', `field ${JSON.stringify(field)} appears more than once (which one is meant cannot be told)`)

/** Sets one known field; a second occurrence throws (read as untrusted input: first-wins would hide a forgery). */
function takeField(parts: WireParts, k: unknown, v: unknown): void {
  if (typeof k !== 'string' || typeof v !== 'string') return
  switch (k) {
    case Fields.id: if (parts.id !== undefined) throw duplicate(k); parts.id = v; break
    case Fields.name: if (parts.name !== undefined) throw duplicate(k); parts.name = v; break
    case Fields.ts: if (parts.ts !== undefined) throw duplicate(k); parts.ts = v; break
    case Fields.headers: if (parts.headers !== undefined) throw duplicate(k); parts.headers = v; break
    case Fields.payload: if (parts.payload !== undefined) throw duplicate(k); parts.payload = v; break
    case Fields.correlationId: if (parts.cid !== undefined) throw duplicate(k); parts.cid = v; break
    case Fields.traceparent: if (parts.traceparent !== undefined) throw duplicate(k); parts.traceparent = v; break
    case Fields.replayGroup: if (parts.replayGroup !== undefined) throw duplicate(k); parts.replayGroup = v; break
    case Fields.meta: if (parts.meta !== undefined) throw duplicate(k); parts.meta = v; break
    default: break
  }
}

/** Picks the known fields out of a flat list or a record (a hot path: no intermediate map). Unknown fields are ignored, repeated or not. */
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

/** What a stored event tells when its payload fails to decode. @internal */
export interface DecodeGuard {
  /** Called with the decode failure; the error it returns is thrown from `payload` in its place. */
  malformed(error: DecodeError): Error
}

/**
 * Makes `event.payload` hand a decode failure to `guard` and throw what it
 * returns (a delivered message's payload dead-letters the entry): no wrapper
 * object per message. @internal
 */
export let setDecodeGuard: (event: StoredEvent, guard: DecodeGuard) => void

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
  readonly #maxDepth: number
  #parsed = false
  #payload: unknown
  /** Told of a payload that fails to decode; what it returns is thrown instead of the DecodeError (a delivered message dead-letters the entry). */
  #guard: DecodeGuard | undefined

  static {
    setDecodeGuard = (event, guard) => {
      event.#guard = guard
    }
  }

  constructor(parts: {
    id: string
    name: string
    headers: Readonly<Record<string, string>>
    timestamp: number
    rawPayload: string
    correlationId: string | undefined
    traceparent: string | undefined
    /** Containers nested at most this deep in the payload (default {@link DEFAULT_MAX_PAYLOAD_DEPTH}). */
    maxDepth?: number
  }) {
    this.#maxDepth = parts.maxDepth ?? DEFAULT_MAX_PAYLOAD_DEPTH
    this.id = parts.id
    this.name = parts.name
    this.headers = parts.headers
    this.timestamp = parts.timestamp
    this.rawPayload = parts.rawPayload
    if (parts.correlationId !== undefined) this.correlationId = parts.correlationId
    if (parts.traceparent !== undefined) this.traceparent = parts.traceparent
  }

  /** The payload, parsed (safely) on first access. @throws {DecodeError} malformed JSON, or nested too deep */
  get payload(): P {
    if (!this.#parsed) {
      try {
        this.#payload = parseJsonSafely(this.rawPayload, this.#maxDepth)
      } catch (error) {
        if (this.#guard !== undefined && error instanceof DecodeError) throw this.#guard.malformed(error)
        throw error
      }
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
 * lazily by {@link StoredEvent.payload}, with the depth limit `maxPayloadDepth`.
 * A known field that appears twice makes the entry malformed (`duplicate_field`).
 *
 * @throws {DecodeError} with a reason code; never anything else
 */
export function decodeEntry(fields: EntryFields, maxPayloadBytes: number, maxPayloadDepth: number = DEFAULT_MAX_PAYLOAD_DEPTH): DecodedEntry {
  // The compact layout as this library writes it, `meta` then `payload` and nothing else: what wireParts would
  // find, without its record and its field-by-field switch (the hot path).
  const untrusted: unknown = fields
  if (Array.isArray(untrusted) && untrusted.length === 4 && untrusted[0] === Fields.meta && untrusted[2] === Fields.payload) {
    const meta: unknown = untrusted[1]
    const payload: unknown = untrusted[3]
    if (typeof meta === 'string' && typeof payload === 'string') return decodeCompactParts(meta, payload, undefined, maxPayloadBytes, maxPayloadDepth)
  }
  const parts = wireParts(fields)
  if (parts.meta !== undefined) return decodeCompact(parts, parts.meta, maxPayloadBytes, maxPayloadDepth)
  const { id, name, ts, headers: rawHeaders, payload: rawPayload, cid, traceparent, replayGroup } = parts
  if (id === undefined || id.length === 0) throw new DecodeError('missing_field', 'field "id" is missing')
  if (name === undefined || name.length === 0) throw new DecodeError('missing_field', 'field "name" is missing')
  if (rawPayload === undefined) throw new DecodeError('missing_field', 'field "payload" is missing')
  let timestamp = Date.now()
  if (ts !== undefined) {
    timestamp = Number(ts)
    if (ts.length === 0 || !Number.isFinite(timestamp)) throw new DecodeError('invalid_field', `field "ts" is not a number`)
  }
  checkPayloadSize(rawPayload, maxPayloadBytes)
  let headers = EMPTY_HEADERS
  if (rawHeaders !== undefined && rawHeaders !== '{}' && rawHeaders.length > 0) {
    if (tooLarge(rawHeaders, maxPayloadBytes)) throw new DecodeError('invalid_headers', `headers of ${Buffer.byteLength(rawHeaders, 'utf8')} bytes exceed the limit of ${maxPayloadBytes} bytes`)
    headers = cleanHeaders(safeJsonParse(rawHeaders, { maxDepth: maxPayloadDepth }))
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
      maxDepth: maxPayloadDepth,
    }),
    replayGroup,
  }
}

/** A payload over the byte limit is refused before it is parsed. */
/** Whether `text` is over `maxBytes` in UTF-8 (measured only when it could be). */
function tooLarge(text: string, maxBytes: number): boolean {
  return text.length * 3 > maxBytes && Buffer.byteLength(text, 'utf8') > maxBytes
}

function checkPayloadSize(rawPayload: string, maxPayloadBytes: number): void {
  if (rawPayload.length * 3 > maxPayloadBytes) {
    const bytes = Buffer.byteLength(rawPayload, 'utf8')
    if (bytes > maxPayloadBytes) {
      throw new DecodeError('payload_too_large', `payload of ${bytes} bytes exceeds the limit of ${maxPayloadBytes} bytes`)
    }
  }
}

/** Parsed headers (untrusted) as a frozen, prototype-less record of strings. */
function cleanHeaders(parsed: unknown): Readonly<Record<string, string>> {
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new DecodeError('invalid_headers', 'headers must be a JSON object')
  }
  let clean: Record<string, string> | undefined
  for (const [k, v] of Object.entries(parsed)) {
    if (typeof v !== 'string') throw new DecodeError('invalid_headers', `header ${JSON.stringify(k)} is not a string`)
    clean ??= Object.create(null) as Record<string, string>
    clean[k] = v
  }
  return clean === undefined ? EMPTY_HEADERS : Object.freeze(clean)
}

const invalidMeta = (why: string): DecodeError => new DecodeError('invalid_field', `field "meta" ${why}`)
const optionalText = (value: unknown, what: string): string | undefined => {
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'string') throw invalidMeta(`holds a ${what} that is not a string`)
  return value
}

/**
 * The compact layout (`meta` + `payload`, see {@link WireFormat}): the
 * envelope is one JSON array, parsed safely and checked part by part. A
 * five-field part next to `meta` makes the entry malformed (which one is meant
 * cannot be told).
 */
function decodeCompact(parts: WireParts, meta: string, maxPayloadBytes: number, maxPayloadDepth: number): DecodedEntry {
  let field: string | undefined
  if (parts.id !== undefined) field = Fields.id
  else if (parts.name !== undefined) field = Fields.name
  else if (parts.ts !== undefined) field = Fields.ts
  else if (parts.headers !== undefined) field = Fields.headers
  else if (parts.cid !== undefined) field = Fields.correlationId
  else if (parts.traceparent !== undefined) field = Fields.traceparent
  if (field !== undefined) throw new DecodeError('duplicate_field', `field ${JSON.stringify(field)} appears next to "meta" (which one is meant cannot be told)`)
  const rawPayload = parts.payload
  if (rawPayload === undefined) throw new DecodeError('missing_field', 'field "payload" is missing')
  return decodeCompactParts(meta, rawPayload, parts.replayGroup, maxPayloadBytes, maxPayloadDepth)
}

/** `meta` and `payload` of a compact entry, the other fields checked: the envelope is read, then the payload's size. */
function decodeCompactParts(meta: string, rawPayload: string, replayGroup: string | undefined, maxPayloadBytes: number, maxPayloadDepth: number): DecodedEntry {
  if (tooLarge(meta, maxPayloadBytes)) throw invalidMeta(`of ${Buffer.byteLength(meta, 'utf8')} bytes exceeds the limit of ${maxPayloadBytes} bytes`)
  const event = scanMeta(meta, rawPayload, maxPayloadDepth) ?? parseMeta(meta, rawPayload, maxPayloadDepth)
  checkPayloadSize(rawPayload, maxPayloadBytes)
  return { event, replayGroup }
}

/** The envelope through {@link safeJsonParse}, checked part by part: what every `meta` value gets, whatever its shape. */
function parseMeta(meta: string, rawPayload: string, maxPayloadDepth: number): StoredEvent {
  let envelope: unknown
  try {
    // An array holding a flat headers object: nothing nests deeper than 2.
    envelope = safeJsonParse(meta, { maxDepth: 2 })
  } catch (error) {
    throw invalidMeta(`is not a JSON array of the envelope (${(error as Error).message})`)
  }
  if (!Array.isArray(envelope) || envelope.length < 4 || envelope.length > 6) throw invalidMeta('is not [id, name, ts, headers, cid?, traceparent?]')
  const [id, name, timestamp, rawHeaders, cid, traceparent] = envelope as unknown[]
  if (typeof id !== 'string' || id.length === 0) throw invalidMeta('has no event id')
  if (typeof name !== 'string' || name.length === 0) throw invalidMeta('has no event name')
  if (typeof timestamp !== 'number' || !Number.isFinite(timestamp)) throw invalidMeta('has a timestamp that is not a number')
  return new StoredEvent({
    id,
    name,
    headers: cleanHeaders(rawHeaders),
    timestamp,
    rawPayload,
    correlationId: optionalText(cid, 'correlation id'),
    traceparent: optionalText(traceparent, 'traceparent'),
    maxDepth: maxPayloadDepth,
  })
}

/*
 * The envelope as the library writes it, read without JSON.parse: `["<id>","<name>",<ts>,{<headers>}` and an
 * optional `,null` or `,"<cid>"` and `,"<traceparent>"`, then `]`, with no whitespace, strings without escapes or
 * control characters, a non-negative integer of at most 15 digits for the time, and string header values. Exactly
 * the texts whose JSON.parse would be that array; for them, the event is the one parseMeta builds (a `__proto__`
 * header dropped, as safeJsonParse drops it; nothing nests). Any other text (an escape, a space, a fraction, a bad
 * part) is not judged here: parseMeta reads it and reports what is wrong.
 */

/** A backslash (an escape) or a control character anywhere: the text is left to the safe parse. */
// eslint-disable-next-line no-control-regex -- control characters are what it looks for
const ESCAPE_OR_CONTROL = /[\\\u0000-\u001f]/

/**
 * The end (after the closing quote) of a JSON string at `at`; -1 when there is none. Only for a text with no
 * escape and no control character (see ESCAPE_OR_CONTROL): then the next quote closes it (native search, no
 * per-character loop).
 */
function plainStringEnd(text: string, at: number): number {
  if (text.charCodeAt(at) !== 0x22) return -1
  const end = text.indexOf('"', at + 1)
  return end < 0 ? -1 : end + 1
}

/** Where the last {@link scanHeaders} ended (module state: no result object per entry). */
let scannedTo = 0
let scannedHeaders: Readonly<Record<string, string>> = EMPTY_HEADERS

/** A flat object of plain strings at `at` (see above); false when it is anything else. */
function scanHeaders(text: string, at: number): boolean {
  if (text.charCodeAt(at) !== 0x7b) return false
  if (text.charCodeAt(at + 1) === 0x7d) {
    scannedTo = at + 2
    scannedHeaders = EMPTY_HEADERS
    return true
  }
  let clean: Record<string, string> | undefined
  let i = at + 1
  for (;;) {
    const keyEnd = plainStringEnd(text, i)
    if (keyEnd < 0 || text.charCodeAt(keyEnd) !== 0x3a) return false
    const valueEnd = plainStringEnd(text, keyEnd + 1)
    if (valueEnd < 0) return false
    const key = text.slice(i + 1, keyEnd - 1)
    // Dropped, as safeJsonParse drops it (a repeated key: the last one wins, in the first one's place, as in JSON.parse).
    if (key !== '__proto__') (clean ??= Object.create(null) as Record<string, string>)[key] = text.slice(keyEnd + 2, valueEnd - 1)
    const next = text.charCodeAt(valueEnd)
    if (next === 0x7d) {
      scannedTo = valueEnd + 1
      scannedHeaders = clean === undefined ? EMPTY_HEADERS : Object.freeze(clean)
      return true
    }
    if (next !== 0x2c) return false
    i = valueEnd + 1
  }
}

/** The event of a `meta` value in the layout the library writes (see above); undefined for any other text. */
function scanMeta(meta: string, rawPayload: string, maxPayloadDepth: number): StoredEvent | undefined {
  const last = meta.length - 1
  if (meta.charCodeAt(0) !== 0x5b || meta.charCodeAt(last) !== 0x5d || ESCAPE_OR_CONTROL.test(meta)) return undefined
  const idEnd = plainStringEnd(meta, 1)
  if (idEnd <= 3 || meta.charCodeAt(idEnd) !== 0x2c) return undefined
  const nameEnd = plainStringEnd(meta, idEnd + 1)
  if (nameEnd <= idEnd + 3 || meta.charCodeAt(nameEnd) !== 0x2c) return undefined
  let i = nameEnd + 1
  let timestamp = 0
  const first = i
  for (let c = meta.charCodeAt(i); c >= 0x30 && c <= 0x39; c = meta.charCodeAt(++i)) timestamp = timestamp * 10 + (c - 0x30)
  // "0", or no leading zero; 15 digits at most: exact, as JSON.parse reads it.
  if (i === first || i - first > 15 || (meta.charCodeAt(first) === 0x30 && i - first > 1) || meta.charCodeAt(i) !== 0x2c) return undefined
  if (!scanHeaders(meta, i + 1)) return undefined
  const headers = scannedHeaders
  i = scannedTo
  let correlationId: string | undefined
  let traceparent: string | undefined
  if (i !== last) {
    if (meta.charCodeAt(i) !== 0x2c) return undefined
    i++
    if (meta.startsWith('null', i)) i += 4
    else {
      const end = plainStringEnd(meta, i)
      if (end < 0) return undefined
      correlationId = meta.slice(i + 1, end - 1)
      i = end
    }
    if (i !== last) {
      if (meta.charCodeAt(i) !== 0x2c) return undefined
      const end = plainStringEnd(meta, i + 1)
      if (end !== last) return undefined
      traceparent = meta.slice(i + 2, end - 1)
    }
  }
  return new StoredEvent({
    id: meta.slice(2, idEnd - 1),
    name: meta.slice(idEnd + 2, nameEnd - 1),
    headers,
    timestamp,
    rawPayload,
    correlationId,
    traceparent,
    maxDepth: maxPayloadDepth,
  })
}

/** @internal The slow reading of a `meta` value, for the tests that hold the fast one to it. */
export const parseMetaForTest = (meta: string, maxPayloadDepth: number = DEFAULT_MAX_PAYLOAD_DEPTH): StoredEvent => parseMeta(meta, '0', maxPayloadDepth)
/** @internal The fast reading of a `meta` value (undefined: not in the written layout), for the same tests. */
export const scanMetaForTest = (meta: string, maxPayloadDepth: number = DEFAULT_MAX_PAYLOAD_DEPTH): StoredEvent | undefined => scanMeta(meta, '0', maxPayloadDepth)
