import fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import { DecodeError, InvalidNameError, InvalidTopicError, PayloadTooLargeError, SerializationError, type DecodeReason } from '../../src/errors.js'
import { Fields, decodeEntry, encodeEvent, newEvent, safeJsonParse, uuidv7, type EntryFields, type Event } from '../../src/event.js'
import { MAX_TOPIC_LENGTH, validateName, validateTopic } from '../../src/topic.js'

const LIMIT = 1024 * 1024
/** The keys the safe parser removes (the rules of secure-json-parse): `__proto__`, and `constructor` holding a `prototype`. */
const isPollutionVector = (key: string, value: unknown): boolean =>
  key === '__proto__' || (key === 'constructor' && value !== null && typeof value === 'object' && Object.hasOwn(value, 'prototype'))
const PROTOTYPE_KEYS = Object.getOwnPropertyNames(Object.prototype).sort()

/** Object.prototype is exactly as it was: no key added, `polluted` nowhere. */
function expectNoPollution(): void {
  expect(({} as Record<string, unknown>)['polluted']).toBeUndefined()
  expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(PROTOTYPE_KEYS)
}

afterEach(expectNoPollution)

/** The JSON round trip of a value with pollution vectors removed: the oracle for decoded payloads. */
const expectedJson = (value: unknown): unknown =>
  JSON.parse(JSON.stringify(value), (key, v: unknown) => (isPollutionVector(key, v) ? undefined : v))

/** The DecodeError reason of a throwing function, or a failure. */
function reasonOf(fn: () => unknown): DecodeReason {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(DecodeError)
    return (error as DecodeError).reason
  }
  throw new Error('expected a DecodeError')
}

/** Decodes entry fields as a record, the shape ioredis returns with RESP3 maps. */
const asRecord = (fields: readonly string[]): Record<string, string> => {
  const record: Record<string, string> = {}
  for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i]!] ??= fields[i + 1]!
  return record
}

const anyString = fc.string({ unit: 'binary', maxLength: 40 })
const headerKey = fc.oneof(anyString, fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'source'))

const eventArbitrary = fc.record({
  id: fc.oneof(fc.uuid(), fc.string({ unit: 'binary', minLength: 1, maxLength: 60 })),
  name: fc.string({ unit: 'binary', minLength: 1, maxLength: 60 }),
  headers: fc.dictionary(headerKey, anyString, { maxKeys: 8 }),
  payload: fc.jsonValue({ maxDepth: 4, stringUnit: 'binary' }),
  timestamp: fc.integer({ min: -(2 ** 47), max: 2 ** 47 }),
  correlationId: fc.option(anyString, { nil: undefined }),
  traceparent: fc.option(fc.constant('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'), { nil: undefined }),
})

describe('encodeEvent -> decodeEntry round trip', () => {
  it('keeps id, name, timestamp, correlation id, traceparent, safe headers and the JSON payload', () => {
    fc.assert(
      fc.property(eventArbitrary, fc.boolean(), (generated, asMap) => {
        const event = newEvent(generated.name, generated.payload, {
          id: generated.id,
          headers: generated.headers,
          timestamp: generated.timestamp,
          ...(generated.correlationId === undefined ? {} : { correlationId: generated.correlationId }),
        })
        const fields = encodeEvent(event, LIMIT, generated.traceparent === undefined ? {} : { traceparent: generated.traceparent })
        expect(fields.every((f) => typeof f === 'string')).toBe(true)
        const { event: decoded, replayGroup } = decodeEntry(asMap ? asRecord(fields) : fields, LIMIT)

        expect(decoded.id).toBe(event.id)
        expect(decoded.name).toBe(event.name)
        expect(decoded.timestamp).toBe(event.timestamp)
        expect(decoded.correlationId).toBe(event.correlationId)
        expect(decoded.traceparent).toBe(generated.traceparent)
        expect(replayGroup).toBeUndefined()
        expect(decoded.payload).toEqual(expectedJson(event.payload))

        const safeHeaders = Object.fromEntries(Object.entries(event.headers).filter(([k]) => k !== '__proto__'))
        expect({ ...decoded.headers }).toEqual(safeHeaders)
        expect(Object.prototype.hasOwnProperty.call(decoded.headers, '__proto__')).toBe(false)
        expect(Object.isFrozen(decoded.headers)).toBe(true)
        expectNoPollution()
      }),
      { numRuns: 300 },
    )
  })

  it('drops a __proto__ header key, keeps constructor and prototype (plain data), without touching any prototype', () => {
    const headers = JSON.parse('{"__proto__":"x","constructor":"y","prototype":"z","source":"web"}') as Record<string, string>
    const fields = encodeEvent(newEvent('user.signup', 1, { headers }), LIMIT)
    const { event } = decodeEntry(fields, LIMIT)
    expect({ ...event.headers }).toEqual({ constructor: 'y', prototype: 'z', source: 'web' })
    expect(Object.getPrototypeOf(event.headers)).toBeNull()
    expect(Object.getPrototypeOf(Object.assign({}, event.headers))).toBe(Object.prototype)
  })

  it('writes the wire fields of DESIGN.md §3', () => {
    const event = newEvent('order.created', { a: 1 }, { id: 'evt-1', timestamp: 1_700_000_000_000, headers: { h: 'v' }, correlationId: 'c-1' })
    expect(encodeEvent(event, LIMIT, { traceparent: 'tp' })).toEqual([
      'id', 'evt-1', 'name', 'order.created', 'ts', '1700000000000', 'headers', '{"h":"v"}', 'payload', '{"a":1}', 'cid', 'c-1', 'traceparent', 'tp',
    ])
    expect(encodeEvent(newEvent('x', null, { id: 'i', timestamp: 1 }), LIMIT)).toEqual(['id', 'i', 'name', 'x', 'ts', '1', 'headers', '{}', 'payload', 'null'])
  })

  it('decodes the replay group of a targeted replay', () => {
    const fields = [...encodeEvent(newEvent('x', 1), LIMIT), Fields.replayGroup, 'billing']
    expect(decodeEntry(fields, LIMIT).replayGroup).toBe('billing')
  })

  it('parses the payload lazily and only once', () => {
    const { event } = decodeEntry(encodeEvent(newEvent('x', { big: [1, 2, 3] }), LIMIT), LIMIT)
    expect(event.rawPayload).toBe('{"big":[1,2,3]}')
    const first = event.payload
    expect(event.payload).toBe(first)
    expect(event.toJSON()).toMatchObject({ name: 'x', payload: { big: [1, 2, 3] } })
  })
})

/** Field values that reach the deeper branches of the decoder. */
const fieldValue = fc.oneof(
  anyString,
  fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
  fc.constantFrom(
    '{"__proto__":{"polluted":1}}',
    '{"\\u005f_proto__":{"polluted":1}}',
    '{"constructor":{"prototype":{"polluted":1}}}',
    '[{"__proto__":{"polluted":1}}]',
    '{"a":1',
    '',
    'null',
    '{"a":"b"}',
    '{"a":1}',
    '[]',
    '1e400',
    'NaN',
  ),
)
const fieldName = fc.oneof(fc.constantFrom(...Object.values(Fields), '__proto__', 'constructor'), anyString)

describe('decodeEntry on untrusted input', () => {
  const checkDecoding = (fields: unknown, limit: number): void => {
    try {
      const { event } = decodeEntry(fields as EntryFields, limit)
      try {
        expect(event.payload).not.toBe(Symbol.for('never'))
      } catch (error) {
        expect(error).toBeInstanceOf(DecodeError)
      }
    } catch (error) {
      expect(error).toBeInstanceOf(DecodeError)
    }
    expectNoPollution()
  }

  it('throws nothing but DecodeError for arbitrary field lists, payload access included', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fieldName, fieldValue), { maxLength: 16 }), fc.integer({ min: 0, max: 2_000 }), checkDecoding),
      { numRuns: 500 },
    )
  })

  it('throws nothing but DecodeError for arbitrary field maps', () => {
    fc.assert(
      fc.property(fc.dictionary(fieldName, fieldValue, { maxKeys: 10 }), fc.integer({ min: 0, max: 2_000 }), checkDecoding),
      { numRuns: 500 },
    )
  })

  it('throws nothing but DecodeError for well-formed entries with hostile values', () => {
    const entry = fc.record({ id: fieldValue, name: fieldValue, ts: fieldValue, headers: fieldValue, payload: fieldValue }, { requiredKeys: [] })
    fc.assert(fc.property(entry, (fields) => checkDecoding(fields, LIMIT)), { numRuns: 500 })
  })

  it('throws nothing but DecodeError for values that are not field lists at all', () => {
    fc.assert(fc.property(fc.anything(), (value) => checkDecoding(value, LIMIT)), { numRuns: 300 })
    for (const value of [null, undefined, 42, 'id', [1, 2, 3, 4], [null, 'x']]) checkDecoding(value, LIMIT)
  })

  const valid = (overrides: Record<string, string | undefined>): Record<string, string> => {
    const fields: Record<string, string | undefined> = { id: 'e1', name: 'n', ts: '1', headers: '{}', payload: '{}', ...overrides }
    return Object.fromEntries(Object.entries(fields).filter((e): e is [string, string] => e[1] !== undefined))
  }

  it('reports malformed JSON only when the payload is read (reason malformed_json)', () => {
    const { event } = decodeEntry(valid({ payload: '{"a":' }), LIMIT)
    expect(event.name).toBe('n')
    expect(reasonOf(() => event.payload)).toBe('malformed_json')
    expect(reasonOf(() => event.payload)).toBe('malformed_json') // still, on every access
  })

  it.each(['id', 'name', 'payload'])('reports a missing %s (reason missing_field)', (field) => {
    expect(reasonOf(() => decodeEntry(valid({ [field]: undefined }), LIMIT))).toBe('missing_field')
  })

  it.each(['id', 'name'])('reports an empty %s (reason missing_field)', (field) => {
    expect(reasonOf(() => decodeEntry(valid({ [field]: '' }), LIMIT))).toBe('missing_field')
  })

  it('reports a timestamp that is not a number (reason invalid_field)', () => {
    expect(reasonOf(() => decodeEntry(valid({ ts: 'yesterday' }), LIMIT))).toBe('invalid_field')
    expect(reasonOf(() => decodeEntry(valid({ ts: '' }), LIMIT))).toBe('invalid_field')
  })

  it.each(['{"a":1}', '{"a":{"b":"c"}}', '{"a":null}', '[]', '["a"]', 'null', '"text"', '42'])(
    'reports headers %s (reason invalid_headers)',
    (headers) => {
      expect(reasonOf(() => decodeEntry(valid({ headers }), LIMIT))).toBe('invalid_headers')
    },
  )

  it('reports malformed headers as a DecodeError at once', () => {
    expect(reasonOf(() => decodeEntry(valid({ headers: '{"a":' }), LIMIT))).toBe('malformed_json')
  })

  it('reports a payload over the limit (reason payload_too_large), counting UTF-8 bytes', () => {
    expect(reasonOf(() => decodeEntry(valid({ payload: JSON.stringify('x'.repeat(100)) }), 50))).toBe('payload_too_large')
    expect(reasonOf(() => decodeEntry(valid({ payload: JSON.stringify('é'.repeat(20)) }), 41))).toBe('payload_too_large') // 42 bytes
    expect(decodeEntry(valid({ payload: JSON.stringify('é'.repeat(20)) }), 42).event.payload).toBe('é'.repeat(20))
  })

  it('drops a {"__proto__":{"polluted":1}} payload key without polluting', () => {
    const { event } = decodeEntry(valid({ payload: '{"__proto__":{"polluted":1},"ok":true}' }), LIMIT)
    const payload = event.payload as Record<string, unknown>
    expect(payload).toEqual({ ok: true })
    expect(Object.prototype.hasOwnProperty.call(payload, '__proto__')).toBe(false)
    expect(Object.getPrototypeOf(payload)).toBe(Object.prototype)
    const merged: Record<string, unknown> = Object.assign({}, payload)
    expect(merged['polluted']).toBeUndefined()
  })

  it('drops unsafe keys at any depth, also behind \\u escapes', () => {
    const text = '{"a":[{"b":{"constructor":{"prototype":{"polluted":1}}}}],"\\u005f_proto__":{"polluted":1},"c":"\\u0041"}'
    const value = safeJsonParse(text) as Record<string, unknown>
    expect(value).toEqual({ a: [{ b: {} }], c: 'A' })
    expect(Object.prototype.hasOwnProperty.call(value, '__proto__')).toBe(false)
    expect(Object.assign<Record<string, unknown>, object>({}, value)['polluted']).toBeUndefined()
  })

  it('drops a __proto__ key spelled with \\u escapes', () => {
    const { event } = decodeEntry(valid({ payload: '{"\\u005f_proto__":{"polluted":1},"ok":1}' }), LIMIT)
    const payload = event.payload as Record<string, unknown>
    expect(Object.prototype.hasOwnProperty.call(payload, '__proto__')).toBe(false)
    expect(Object.assign<Record<string, unknown>, object>({}, payload)['polluted']).toBeUndefined()
    expect(payload).toEqual({ ok: 1 })
  })

  it('decodes a deeply nested payload holding an unsafe key without overflowing the stack (no depth limit)', () => {
    const depth = 100_000
    const text = `${'['.repeat(depth)}{"__proto__":{"polluted":1}}${']'.repeat(depth)}`
    const { event } = decodeEntry(valid({ payload: text }), LIMIT, Number.POSITIVE_INFINITY)
    let node: unknown = event.payload
    for (let i = 0; i < depth; i++) node = (node as unknown[])[0]
    expect(node).toEqual({})
  })
})

describe('encodeEvent checks everything before any I/O', () => {
  const base = (payload: unknown, headers?: Record<string, unknown>): Event =>
    ({ id: 'e1', name: 'n', payload, headers: headers ?? {}, timestamp: 1 }) as Event

  it('refuses a cyclic payload with a SerializationError', () => {
    const cyclic: Record<string, unknown> = { a: 1 }
    cyclic['self'] = cyclic
    expect(() => encodeEvent(base(cyclic), LIMIT)).toThrow(SerializationError)
  })

  it('refuses BigInt, undefined, functions and symbols', () => {
    for (const payload of [10n, { n: 1n }, undefined, () => 1, Symbol('s')]) {
      expect(() => encodeEvent(base(payload), LIMIT)).toThrow(SerializationError)
    }
  })

  it('refuses a payload whose toJSON throws', () => {
    expect(() => encodeEvent(base({ toJSON: () => { throw new Error('boom') } }), LIMIT)).toThrow(SerializationError)
  })

  it('refuses headers that are not strings', () => {
    for (const value of [1, null, true, { a: 'b' }, ['x']]) {
      expect(() => encodeEvent(base(1, { h: value }), LIMIT)).toThrow(SerializationError)
    }
    expect(() => encodeEvent({ ...base(1), headers: ['a'] as unknown as Record<string, string> }, LIMIT)).toThrow(SerializationError)
    expect(() => encodeEvent({ ...base(1), headers: 'a' as unknown as Record<string, string> }, LIMIT)).toThrow(SerializationError)
  })

  it('refuses an empty name or id and a timestamp that is not finite', () => {
    expect(() => encodeEvent({ ...base(1), name: '' }, LIMIT)).toThrow(SerializationError)
    expect(() => encodeEvent({ ...base(1), id: '' }, LIMIT)).toThrow(SerializationError)
    expect(() => encodeEvent({ ...base(1), timestamp: Number.NaN }, LIMIT)).toThrow(SerializationError)
    expect(() => encodeEvent({ ...base(1), timestamp: Number.POSITIVE_INFINITY }, LIMIT)).toThrow(SerializationError)
  })

  it('refuses a payload over the limit with a PayloadTooLargeError naming bytes and limit', () => {
    const payload = 'é'.repeat(20) // 42 bytes of JSON with the quotes
    expect(() => encodeEvent(base(payload), 42)).not.toThrow()
    try {
      encodeEvent(base(payload), 41)
      expect.unreachable()
    } catch (error) {
      expect(error).toBeInstanceOf(PayloadTooLargeError)
      expect(error).toMatchObject({ bytes: 42, limit: 41, code: 'PAYLOAD_TOO_LARGE' })
    }
  })

  it('agrees with the decoder on the limit for any payload', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 2, stringUnit: 'grapheme' }), fc.integer({ min: 1, max: 300 }), (payload, limit) => {
        const bytes = Buffer.byteLength(JSON.stringify(payload), 'utf8')
        const event = base(payload)
        // The headers are capped like the payload: no headers are written as `{}`, 2 bytes (limit 1 refuses them too).
        if (bytes > limit || 2 > limit) {
          expect(() => encodeEvent(event, limit)).toThrow(PayloadTooLargeError)
        } else {
          expect(decodeEntry(encodeEvent(event, limit), limit).event.payload).toEqual(expectedJson(payload))
        }
      }),
    )
  })
})

describe('uuidv7', () => {
  const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

  const msOf = (id: string): number => Number.parseInt(id.replace(/-/g, '').slice(0, 12), 16)

  it('has the UUIDv7 layout: version 7, RFC 4122 variant, the time in the first 48 bits', () => {
    const before = Date.now()
    const id = uuidv7()
    expect(id).toMatch(UUID_V7)
    expect(msOf(id)).toBeGreaterThanOrEqual(before)
    expect(msOf(id)).toBeLessThanOrEqual(Date.now())
  })

  it('is strictly increasing within a process, also within one millisecond and past 4096 ids', () => {
    const now = Date.now()
    const ids = Array.from({ length: 10_000 }, () => uuidv7(now))
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true)
    expect(new Set(ids).size).toBe(ids.length)
    for (const id of ids) expect(id).toMatch(UUID_V7)
  })

  it('stays increasing when the clock goes backwards', () => {
    const a = uuidv7()
    const b = uuidv7(Date.now() - 60_000)
    expect(b > a).toBe(true)
  })

  it('is what newEvent uses by default', () => {
    expect(newEvent('x', 1).id).toMatch(UUID_V7)
  })
})

describe('validateTopic', () => {
  it.each(['user-events', 'a', 'A.b_c-d:e', 'orders:eu.v2', '0', 'x'.repeat(MAX_TOPIC_LENGTH)])('accepts %s', (topic) => {
    expect(() => validateTopic(topic)).not.toThrow()
  })

  it.each([
    ['empty', ''],
    ['201 characters', 'x'.repeat(MAX_TOPIC_LENGTH + 1)],
    ['a space', 'user events'],
    ['braces', 'user{events}'],
    ['an opening brace', '{user'],
    ['a newline', 'user\nevents'],
    ['a NUL', 'user\u0000'],
    ['a tab', '\tuser'],
    ['a slash', 'user/events'],
    ['a star', 'user*'],
    ['non-ASCII letters', 'événements'],
  ])('refuses %s', (_what, topic) => {
    expect(() => validateTopic(topic)).toThrow(InvalidTopicError)
  })

  it('refuses values that are not strings', () => {
    for (const value of [undefined, null, 42, {}, ['a']]) expect(() => validateTopic(value)).toThrow(InvalidTopicError)
  })

  it('accepts exactly the strings of [A-Za-z0-9._:-]{1,200}', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary-ascii', maxLength: 210 }), (topic) => {
        const valid = /^[A-Za-z0-9._:-]{1,200}$/.test(topic)
        if (valid) expect(() => validateTopic(topic)).not.toThrow()
        else expect(() => validateTopic(topic)).toThrow(InvalidTopicError)
      }),
    )
  })

  it('names the topic and the reason, with a stable code', () => {
    try {
      validateTopic('bad topic')
      expect.unreachable()
    } catch (error) {
      expect(error).toMatchObject({ code: 'INVALID_TOPIC', topic: 'bad topic' })
      expect((error as Error).message).toContain('"bad topic"')
    }
  })
})

describe('validateName', () => {
  it('accepts group and consumer names, with @', () => {
    expect(() => validateName('group', 'billing')).not.toThrow()
    expect(() => validateName('consumer', 'worker-1@host.local')).not.toThrow()
  })

  it.each(['', 'a b', '{g}', 'x'.repeat(MAX_TOPIC_LENGTH + 1)])('refuses %j', (name) => {
    expect(() => validateName('group', name)).toThrow(InvalidNameError)
  })
})
