import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { decodeEntry, encodeEvent, newEvent, parseMetaForTest, scanMetaForTest, type StoredEvent } from '../../src/event.js'
import { DecodeError } from '../../src/errors.js'

/**
 * A compact entry's `meta` in the layout the library writes is read by a scan
 * without JSON.parse (issue 14); every other text goes through safeJsonParse.
 * These properties hold the scan to the safe parse: on every text the scan
 * accepts, the event is the same (headers, their order, their prototype, a
 * dropped `__proto__`); on the others, decodeEntry fails (or succeeds) exactly
 * as the safe parse does.
 */

const MiB = 1024 * 1024

/** What a decoded event is made of, headers as their own entries in order (and whether they have a prototype). */
function shape(event: StoredEvent): unknown {
  return {
    id: event.id,
    name: event.name,
    timestamp: event.timestamp,
    correlationId: event.correlationId,
    traceparent: event.traceparent,
    headers: Object.entries(event.headers),
    headersProto: Object.getPrototypeOf(event.headers) === null,
    frozen: Object.isFrozen(event.headers),
    own: Object.keys(event).sort(),
  }
}

/** The outcome of reading `meta`: the event's shape, or the error's reason and message. */
function outcome(read: () => StoredEvent): { ok?: unknown; reason?: string; message?: string } {
  try {
    return { ok: shape(read()) }
  } catch (error) {
    expect(error).toBeInstanceOf(DecodeError)
    return { reason: (error as DecodeError).reason, message: (error as DecodeError).message }
  }
}

const text = fc.oneof(
  { weight: 2, arbitrary: fc.stringMatching(/^[\w.:-]{1,12}$/) },
  fc.constantFrom('', 'e1', 'user.signup', '__proto__', 'constructor', 'a"b', 'a\\b', 'tab\there', '\u2028', 'é', '\ud800', '{', ']', 'null'),
  fc.string({ maxLength: 6 }),
  fc.uuid(),
)
const headerKey = fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', '', '1', '0', 'source', 'a'), fc.string({ maxLength: 3 }))
/** JSON text of a value, written by hand (a literal could not hold a `__proto__` key or repeated keys). */
const headersText = fc.oneof(
  { weight: 3, arbitrary: fc.constant('{}') },
  fc.array(fc.tuple(headerKey, fc.oneof({ weight: 8, arbitrary: text }, fc.constant(1), fc.constant(null), fc.constant({ x: 1 }))), { maxLength: 4 }).map(
    (entries) => `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`,
  ),
  fc.constantFrom('{}', '[]', 'null', '"h"', '{"\\u005f_proto__":"x"}', '{"constructor":{"prototype":{}}}', '{"a":"1" }', '{ }'),
)
const timestamp = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 2 ** 45 }).map(String) },
  fc.constantFrom('0', '00', '01', '-1', '1.5', '1e3', '123456789012345', '1234567890123456', '9007199254740993', '"5"', 'null', ''),
  fc.nat().map(String),
  fc.integer({ min: 0, max: 999_999_999_999_999 }).map(String),
)
const optional = fc.oneof(fc.constant(undefined), fc.constant('null'), text.map((t) => JSON.stringify(t)), fc.constantFrom('5', '{}', '""'))
const meta = fc
  .tuple(text, text, timestamp, headersText, optional, optional, fc.oneof({ weight: 3, arbitrary: fc.constant('') }, fc.constantFrom(' ', '\t', '\u0001', ',', ']', '[', '"', '0', '\\')), fc.nat(200))
  .map(([id, name, ts, headers, cid, tp, noise, at]) => {
    const parts = [JSON.stringify(id), JSON.stringify(name), ts, headers]
    if (cid !== undefined) parts.push(cid)
    if (cid !== undefined && tp !== undefined) parts.push(tp)
    const written = `[${parts.join(',')}]`
    // Sometimes one stray character somewhere: whitespace, a separator, a bracket.
    if (noise === '') return written
    const i = at % (written.length + 1)
    return written.slice(0, i) + noise + written.slice(i)
  })

describe('the scan of a compact entry’s meta', () => {
  it('reads what the safe parse reads, wherever it accepts the text', () => {
    fc.assert(
      fc.property(meta, (m) => {
        const scanned = scanMetaForTest(m)
        if (scanned !== undefined) expect(shape(scanned)).toEqual(outcome(() => parseMetaForTest(m)).ok)
        // Through decodeEntry (scan, else the safe parse), the outcome is the safe parse's.
        expect(outcome(() => decodeEntry(['meta', m, 'payload', '0'], MiB).event)).toEqual(outcome(() => parseMetaForTest(m)))
      }),
      { numRuns: 2_000 },
    )
  }, 60_000)

  it('takes every envelope the library writes (but for escaped strings), with headers, correlation id and traceparent', () => {
    const events = [
      newEvent('a.b', { x: 1 }, { id: 'e1', timestamp: 1_700_000_000_123 }),
      newEvent('user.signup', null, { headers: { source: 'web-app', '1': 'one', constructor: 'c' }, correlationId: 'corr' }),
      newEvent('n', 'p', { timestamp: 0 }),
    ]
    for (const event of events) {
      for (const extras of [{}, { traceparent: '00-abc-def-01' }]) {
        const m = encodeEvent(event, MiB, extras, 64, 'compact')[1] as string
        const scanned = scanMetaForTest(m)
        expect(scanned).toBeDefined()
        expect(shape(scanned as StoredEvent)).toEqual(shape(parseMetaForTest(m)))
      }
    }
    // Left to the safe parse: an escape, a fraction, a negative time.
    expect(scanMetaForTest(encodeEvent(newEvent('quote"', 1), MiB, {}, 64, 'compact')[1] as string)).toBeUndefined()
    expect(scanMetaForTest('["e","n",1.5,{}]')).toBeUndefined()
    expect(scanMetaForTest('["e","n",-5,{}]')).toBeUndefined()
  })

  it('drops a __proto__ header as the safe parse does, and keeps a constructor header', () => {
    const scanned = scanMetaForTest('["e","n",1,{"__proto__":"x","constructor":"c","a":"1","a":"2"}]') as StoredEvent
    expect(Object.entries(scanned.headers)).toEqual([['constructor', 'c'], ['a', '2']])
    expect(Object.getPrototypeOf(scanned.headers)).toBeNull()
    expect(({} as Record<string, unknown>)['x']).toBeUndefined()
  })
})
