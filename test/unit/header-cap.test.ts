/**
 * Headers are capped like the payload (EVENT_MAX_PAYLOAD_BYTES): a publish with
 * larger headers is refused with PayloadTooLargeError (part 'headers'), and an
 * entry written by something else with a larger `headers` (five fields) or
 * `meta` (compact) field is malformed, so it goes to the dead letter queue
 * instead of being parsed whole.
 */
import { describe, expect, it } from 'vitest'
import { DecodeError, PayloadTooLargeError } from '../../src/errors.js'
import { decodeEntry, encodeEvent, newEvent } from '../../src/event.js'

const LIMIT = 1_024
const bigHeaders = { note: 'x'.repeat(2_000) }

describe('the header cap', () => {
  it.each(['fields', 'compact'] as const)('refuses to publish headers over the limit (%s layout)', (format) => {
    const event = newEvent('e', { ok: true }, { headers: bigHeaders })
    let error: unknown
    try {
      encodeEvent(event, LIMIT, {}, 64, format)
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(PayloadTooLargeError)
    expect(error).toMatchObject({ part: 'headers', limit: LIMIT })
    expect((error as Error).message).toMatch(/^headers of \d+ bytes exceeds the limit of 1024 bytes/)
  })

  it.each(['fields', 'compact'] as const)('accepts headers within the limit and reads them back (%s layout)', (format) => {
    const event = newEvent('e', { ok: true }, { headers: { note: 'x'.repeat(500) } })
    const decoded = decodeEntry(encodeEvent(event, LIMIT, {}, 64, format), LIMIT).event
    expect(decoded.headers).toEqual({ note: 'x'.repeat(500) })
  })

  it('reads a five-field entry with oversize headers as malformed (invalid_headers)', () => {
    const fields = ['id', 'a1', 'name', 'e', 'ts', '1', 'headers', JSON.stringify(bigHeaders), 'payload', '{}']
    expect(() => decodeEntry(fields, LIMIT)).toThrow(DecodeError)
    expect(() => decodeEntry(fields, LIMIT)).toThrow(/invalid_headers: headers of \d+ bytes exceed the limit/)
  })

  it('reads a compact entry with an oversize meta as malformed (invalid_field)', () => {
    const fields = ['meta', JSON.stringify(['a1', 'e', 1, bigHeaders]), 'payload', '{}']
    expect(() => decodeEntry(fields, LIMIT)).toThrow(/invalid_field: field "meta" of \d+ bytes exceeds the limit/)
  })
})
