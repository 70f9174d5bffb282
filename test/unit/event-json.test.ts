import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { DecodeError, PayloadTooDeepError, SerializationError } from '../../src/errors.js'
import { DEFAULT_MAX_PAYLOAD_DEPTH, assertJsonPayload, decodeEntry, encodeEvent, jsonDepthExceeds, newEvent, safeJsonParse, type Event } from '../../src/event.js'

const LIMIT = 1024 * 1024
const base = (payload: unknown): Event => ({ id: 'e1', name: 'n', payload, headers: {}, timestamp: 1 })

/** The message of the SerializationError a payload raises on encoding. */
function refusal(payload: unknown): string {
  try {
    encodeEvent(base(payload), LIMIT)
  } catch (error) {
    expect(error).toBeInstanceOf(SerializationError)
    return (error as Error).message
  }
  throw new Error('expected a SerializationError')
}

const nested = (depth: number, leaf: string = '1'): string => `${'['.repeat(depth)}${leaf}${']'.repeat(depth)}`

describe('safe JSON parsing keeps legitimate keys (issue 11, bug 9)', () => {
  it('keeps keys named constructor and prototype', () => {
    expect(safeJsonParse('{"constructor":"Acme","prototype":"v2"}')).toEqual({ constructor: 'Acme', prototype: 'v2' })
    expect(safeJsonParse('{"a":{"constructor":{"name":"Acme"},"prototype":{"x":1}}}')).toEqual({ a: { constructor: { name: 'Acme' }, prototype: { x: 1 } } })
  })

  it('round-trips such payloads through publish encoding and decoding', () => {
    const payloads: unknown[] = [
      { constructor: 'Acme', prototype: 'v2' },
      { company: { constructor: 'Acme Corp', prototype: true }, list: [{ prototype: 1 }] },
      { constructor: { name: 'x' } },
    ]
    for (const payload of payloads) {
      const { event } = decodeEntry(encodeEvent(newEvent('company.updated', payload), LIMIT), LIMIT)
      expect(event.payload).toEqual(payload)
    }
  })

  it('removes only the pollution vectors: __proto__ and constructor.prototype, at any depth and behind \\u escapes', () => {
    const value = safeJsonParse('{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}},"prototype":"kept","b":[{"\\u0063onstructor":{"prototype":{}}}]}')
    expect(value).toEqual({ prototype: 'kept', b: [{}] })
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined()
  })

  it('keeps every key but the vectors for arbitrary JSON objects', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom('constructor', 'prototype', 'name', 'toString', 'valueOf'), fc.jsonValue({ maxDepth: 2 })), (object) => {
        const text = JSON.stringify(object)
        // fast-check's nested values may hold an own "__proto__" key (e.g. {"constructor":{"__proto__":false}}): a vector too.
        const expected = JSON.parse(text, (key, v: unknown) =>
          key === '__proto__' || (key === 'constructor' && v !== null && typeof v === 'object' && Object.hasOwn(v, 'prototype')) ? undefined : v) as unknown
        expect(safeJsonParse(text)).toEqual(expected)
      }),
    )
  })
})

describe('payloads JSON cannot represent are refused, naming the path (issue 13, item 8)', () => {
  it.each([
    ['a Map', { m: new Map([[1, 2]]) }, '$.m is a Map'],
    ['a Set', { tags: new Set(['a']) }, '$.tags is a Set'],
    ['a BigInt', { n: [1, 2n] }, '$.n[1] is a BigInt'],
    ['a function property', { f: () => 1 }, '$.f is a function'],
    ['a symbol', { s: Symbol('x') }, '$.s is a symbol'],
    ['NaN', { a: { b: Number.NaN } }, '$.a.b is NaN'],
    ['Infinity', [Number.POSITIVE_INFINITY], '$[0] is Infinity'],
    ['-Infinity', { 'odd key': Number.NEGATIVE_INFINITY }, '$["odd key"] is -Infinity'],
    ['undefined in an array', { list: [1, undefined] }, '$.list[1] is undefined'],
    ['undefined at the top', undefined, '$ is undefined'],
    ['a RegExp', { re: /x/ }, '$.re is a RegExp'],
    ['a typed array', { bytes: new Uint8Array(2) }, '$.bytes is a binary view'],
    ['an invalid Date', { at: new Date(Number.NaN) }, '$.at is an invalid Date'],
  ])('%s', (_, payload, message) => {
    expect(refusal(payload)).toContain(message)
  })

  it('refuses a cycle, naming where it closes', () => {
    const order: Record<string, unknown> = { id: 1, lines: [] }
    ;(order['lines'] as unknown[]).push({ order })
    expect(refusal(order)).toContain('$.lines[0].order is a cycle')
  })

  it('allows a value that appears twice without a cycle', () => {
    const shared = { a: 1 }
    expect(() => encodeEvent(base({ x: shared, y: shared }), LIMIT)).not.toThrow()
  })

  it('drops undefined properties and writes a Date as its ISO string, as JSON.stringify does', () => {
    const at = new Date('2030-01-01T00:00:00.000Z')
    const fields = encodeEvent(base({ keep: 1, drop: undefined, at, nested: { at } }), LIMIT)
    expect(fields[fields.indexOf('payload') + 1]).toBe('{"keep":1,"at":"2030-01-01T00:00:00.000Z","nested":{"at":"2030-01-01T00:00:00.000Z"}}')
  })

  it('accepts class instances by their own enumerable properties, and toJSON results', () => {
    class Money {
      constructor(readonly amount: number, readonly currency: string) {}
    }
    expect(() => encodeEvent(base({ price: new Money(3, 'EUR'), custom: { toJSON: () => ({ v: 1 }) } }), LIMIT)).not.toThrow()
    expect(refusal({ custom: { toJSON: () => new Map() } })).toContain('$.custom is a Map')
  })

  it('accepts every JSON value fast-check makes', () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 5 }), (value) => { expect(() => { assertJsonPayload(value) }).not.toThrow() }))
  })
})

describe('the payload depth limit (issue 15, item 8)', () => {
  it('is 64 by default', () => {
    expect(DEFAULT_MAX_PAYLOAD_DEPTH).toBe(64)
  })

  it('refuses a payload nested deeper than the limit on publish with a typed error', () => {
    let deep: unknown = 1
    for (let i = 0; i < 65; i++) deep = [deep]
    expect(() => encodeEvent(base(deep), LIMIT)).toThrow(PayloadTooDeepError)
    expect(() => encodeEvent(base(deep), LIMIT, {}, 65)).not.toThrow()
    let ok: unknown = 1
    for (let i = 0; i < 64; i++) ok = { a: ok }
    expect(() => encodeEvent(base(ok), LIMIT)).not.toThrow()
    try {
      encodeEvent(base(deep), LIMIT, {}, 3)
    } catch (error) {
      expect(error).toBeInstanceOf(SerializationError)
      expect(error).toMatchObject({ code: 'SERIALIZATION_FAILED', limit: 3, path: '$[0][0][0]' })
    }
  })

  it('refuses 100,000 levels on publish without overflowing the stack', () => {
    let deep: unknown = 1
    for (let i = 0; i < 100_000; i++) deep = [deep]
    expect(() => encodeEvent(base(deep), LIMIT)).toThrow(PayloadTooDeepError)
  })

  it('makes a read payload nested deeper than the limit malformed (payload_too_deep), before parsing it', () => {
    const fields = ['id', 'e', 'name', 'n', 'payload', nested(100_000)]
    const { event } = decodeEntry(fields, LIMIT)
    let error: unknown
    try {
      expect(event.payload).toBe('never reached')
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(DecodeError)
    expect(error).toMatchObject({ reason: 'payload_too_deep' })
    expect(decodeEntry(['id', 'e', 'name', 'n', 'payload', nested(64)], LIMIT).event.payload).toBeDefined()
    expect(() => decodeEntry(['id', 'e', 'name', 'n', 'payload', nested(65)], LIMIT).event.payload).toThrow(/payload_too_deep/)
    expect(() => decodeEntry(['id', 'e', 'name', 'n', 'payload', nested(10)], LIMIT, 9).event.payload).toThrow(/payload_too_deep/)
  })

  it('counts only brackets outside strings', () => {
    const text = JSON.stringify({ s: '[[[[[[[[[[{{{{{{{{{{\\"[[[[' })
    expect(jsonDepthExceeds(text, 1)).toBe(false)
    expect(jsonDepthExceeds(nested(3), 2)).toBe(true)
    expect(jsonDepthExceeds(nested(3), 3)).toBe(false)
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 6 }), fc.integer({ min: 0, max: 8 }), (value, limit) => {
        let threw = false
        try {
          assertJsonPayload(value, limit)
        } catch {
          threw = true
        }
        expect(jsonDepthExceeds(JSON.stringify(value), limit)).toBe(threw)
      }),
    )
  })
})

describe('duplicate field names make an entry malformed (issue 15, item 8)', () => {
  it.each(['id', 'name', 'ts', 'headers', 'payload', 'cid', 'traceparent', 'replay_group'])('a second %s', (field) => {
    const fields = encodeEvent(newEvent('n', 1, { correlationId: 'c' }), LIMIT, { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' })
    const value = field === 'payload' || field === 'headers' ? '{}' : field === 'ts' ? '1' : 'x'
    if (field === 'replay_group') fields.push(field, 'a')
    fields.push(field, value)
    expect(() => decodeEntry(fields, LIMIT)).toThrow(DecodeError)
    try {
      decodeEntry(fields, LIMIT)
    } catch (error) {
      expect(error).toMatchObject({ reason: 'duplicate_field' })
    }
  })

  it('ignores unknown fields, repeated or not', () => {
    const fields = [...encodeEvent(newEvent('n', 1), LIMIT), 'x-extra', '1', 'x-extra', '2']
    expect(decodeEntry(fields, LIMIT).event.name).toBe('n')
  })
})
