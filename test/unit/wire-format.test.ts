/**
 * The compact wire format (issue 14): `meta` (a JSON array of the envelope) and
 * `payload`. Encoding checks what the five-field layout checks; decoding reads
 * both layouts, as untrusted input.
 */
import { describe, expect, it } from 'vitest'
import { decodeEntry, encodeEvent, newEvent, type EntryFields, type Event } from '../../src/event.js'
import { loadConfig } from '../../src/config/index.js'
import { ConfigError, DecodeError, PayloadTooLargeError, SerializationError } from '../../src/errors.js'

const MiB = 1024 * 1024
const decode = (fields: EntryFields, maxBytes = MiB): ReturnType<typeof decodeEntry> => decodeEntry(fields, maxBytes)
const reason = (fields: readonly string[], maxBytes = MiB): string | undefined => {
  try {
    decode(fields, maxBytes)
    return undefined
  } catch (error) {
    expect(error).toBeInstanceOf(DecodeError)
    return (error as DecodeError).reason
  }
}

describe('encodeEvent(…, "compact")', () => {
  it('writes two fields, and decodes to the same event as the five-field layout', () => {
    const events: Event[] = [
      newEvent('a.b', { x: [1, { y: 'z' }] }, { id: 'e1', timestamp: 1_700_000_000_123 }),
      newEvent('quote"name\\', 'text', { headers: { 'k"': 'v\n', constructor: 'c' }, correlationId: 'corr' }),
      newEvent('n', null, { timestamp: -5 }),
    ]
    for (const event of events) {
      const compact = encodeEvent(event, MiB, {}, 64, 'compact')
      expect(compact.filter((_, i) => i % 2 === 0)).toEqual(['meta', 'payload'])
      const a = decode(compact).event
      const b = decode(encodeEvent(event, MiB)).event
      for (const e of [a, b]) {
        expect(e.toJSON()).toEqual({ ...event, headers: { ...event.headers } })
        expect({ ...e.headers }).toEqual({ ...event.headers })
      }
    }
  })

  it('carries the traceparent (with a null correlation id before it) and the correlation id', () => {
    const event = newEvent('t', 1, { id: 'e2', timestamp: 7 })
    const fields = encodeEvent(event, MiB, { traceparent: '00-abc-def-01' }, 64, 'compact')
    expect(fields[1]).toBe('["e2","t",7,{},null,"00-abc-def-01"]')
    const decoded = decode(fields).event
    expect(decoded.traceparent).toBe('00-abc-def-01')
    expect(decoded.correlationId).toBeUndefined()
    expect(decode(encodeEvent({ ...event, correlationId: 'c' }, MiB, {}, 64, 'compact')).event.correlationId).toBe('c')
  })

  it('refuses what the five-field layout refuses: a bad payload, a payload over the cap, bad headers', () => {
    expect(() => encodeEvent(newEvent('x', { n: 1n }), MiB, {}, 64, 'compact')).toThrow(SerializationError)
    expect(() => encodeEvent(newEvent('x', 'y'.repeat(100)), 50, {}, 64, 'compact')).toThrow(PayloadTooLargeError)
    expect(() => encodeEvent({ ...newEvent('x', 1), headers: { a: 1 } as never }, MiB, {}, 64, 'compact')).toThrow(SerializationError)
    expect(() => encodeEvent({ ...newEvent('x', 1), timestamp: '5' as never }, MiB, {}, 64, 'compact')).toThrow(SerializationError)
  })
})

describe('decodeEntry of a compact entry (untrusted)', () => {
  const ok = ['meta', '["e","n",1,{}]', 'payload', '{"a":1}']

  it('reads a well-formed entry, replay_group included, fields in any order', () => {
    expect(decode(ok).event).toMatchObject({ id: 'e', name: 'n', timestamp: 1, rawPayload: '{"a":1}' })
    const replayed = decode(['payload', '2', 'replay_group', 'g1', 'meta', '["e","n",1,{"h":"v"}]'])
    expect(replayed.replayGroup).toBe('g1')
    expect(replayed.event.headers).toEqual({ h: 'v' })
    expect(decode({ meta: '["e","n",1,{}]', payload: '3' }).event.payload).toBe(3)
  })

  it.each([
    ['no payload', ['meta', '["e","n",1,{}]'], 'missing_field'],
    ['meta twice', [...ok, 'meta', '["f","n",1,{}]'], 'duplicate_field'],
    ['meta next to an id field', [...ok, 'id', 'other'], 'duplicate_field'],
    ['meta next to a name field', ['name', 'x', ...ok], 'duplicate_field'],
    ['meta not JSON', ['meta', '["e"', 'payload', '1'], 'invalid_field'],
    ['meta an object', ['meta', '{"id":"e"}', 'payload', '1'], 'invalid_field'],
    ['meta too short', ['meta', '["e","n",1]', 'payload', '1'], 'invalid_field'],
    ['meta too long', ['meta', '["e","n",1,{},null,null,"x"]', 'payload', '1'], 'invalid_field'],
    ['empty id', ['meta', '["","n",1,{}]', 'payload', '1'], 'invalid_field'],
    ['numeric name', ['meta', '["e",5,1,{}]', 'payload', '1'], 'invalid_field'],
    ['timestamp as text', ['meta', '["e","n","1",{}]', 'payload', '1'], 'invalid_field'],
    ['nested deeper than an envelope', ['meta', '["e","n",1,{"h":{"x":[1]}}]', 'payload', '1'], 'invalid_field'],
    ['headers an array', ['meta', '["e","n",1,[]]', 'payload', '1'], 'invalid_headers'],
    ['a header not a string', ['meta', '["e","n",1,{"h":1}]', 'payload', '1'], 'invalid_headers'],
    ['a correlation id not a string', ['meta', '["e","n",1,{},5]', 'payload', '1'], 'invalid_field'],
  ])('%s: DecodeError %s', (_, fields, expected) => {
    expect(reason(fields)).toBe(expected)
  })

  it('refuses a payload over the cap before parsing it', () => {
    expect(reason(['meta', '["e","n",1,{}]', 'payload', `"${'x'.repeat(200)}"`], 100)).toBe('payload_too_large')
  })

  it('drops __proto__ from the headers (no prototype pollution), keeps a plain constructor key', () => {
    const event = decode(['meta', '["e","n",1,{"__proto__":"x","constructor":"c"}]', 'payload', '1']).event
    expect(Object.keys(event.headers)).toEqual(['constructor'])
    expect(({} as Record<string, unknown>)['x']).toBeUndefined()
    const escaped = decode(['meta', '["e","n",1,{"\\u005f_proto__":"x"}]', 'payload', '1']).event
    expect(Object.keys(escaped.headers)).toEqual([])
  })

  it('parses the payload lazily with the depth limit, as for five fields', () => {
    const deep = decodeEntry(['meta', '["e","n",1,{}]', 'payload', '[[[[1]]]]'], MiB, 2).event
    expect(() => deep.payload).toThrow(DecodeError)
  })
})

describe('EVENT_WIRE_FORMAT', () => {
  it('defaults to compact; takes fields (or compact) from the variable or the option; refuses anything else', () => {
    expect(loadConfig({}, {}).wireFormat).toBe('compact')
    expect(loadConfig({}, { EVENT_WIRE_FORMAT: 'fields' }).wireFormat).toBe('fields')
    expect(loadConfig({}, { EVENT_WIRE_FORMAT: ' Fields ' }).wireFormat).toBe('fields')
    expect(loadConfig({}, { EVENT_WIRE_FORMAT: 'compact' }).wireFormat).toBe('compact')
    expect(loadConfig({ wireFormat: 'fields' }, { EVENT_WIRE_FORMAT: 'compact' }).wireFormat).toBe('fields')
    expect(loadConfig({ wireFormat: 'compact' }, { EVENT_WIRE_FORMAT: 'fields' }).wireFormat).toBe('compact')
    expect(() => loadConfig({}, { EVENT_WIRE_FORMAT: 'json' })).toThrow(ConfigError)
    expect(() => loadConfig({}, { EVENT_WIRE_FORMAT: '' })).toThrow(ConfigError)
  })
})
