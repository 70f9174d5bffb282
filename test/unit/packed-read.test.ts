/**
 * The packed read decoder (issue 14): one msgpack string per read, as
 * `readPacked-1.lua` writes it with Redis's cmsgpack. Checked against a small
 * msgpack encoder written here (arrays and strings, every size class, also the
 * non-minimal ones): whatever it encodes decodes to the same entries; a reply
 * cut anywhere, with bytes after it, or of another shape is a BackendError,
 * never an entry.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { BackendError } from '../../src/errors.js'
import { Fields } from '../../src/event.js'
import { decodePackedEntries, decodePackedReads, packedReadsUnsupported } from '../../src/backend/redis/packed-read.js'

type Size = 'fix' | 8 | 16 | 32
type Value = string | Buffer | Value[]

/** A msgpack encoder of arrays and strings; `size` picks the header (default: the smallest that fits, as cmsgpack does). */
function pack(value: Value, size: (kind: 'str' | 'array', length: number) => Size = smallest): Buffer {
  const parts: Buffer[] = []
  const header = (kind: 'str' | 'array', length: number): void => {
    const s = size(kind, length)
    if (kind === 'str') {
      if (s === 'fix') parts.push(Buffer.from([0xa0 | length]))
      else if (s === 8) parts.push(Buffer.from([0xd9, length]))
      else if (s === 16) parts.push(Buffer.from([0xda, length >> 8, length & 0xff]))
      else parts.push(Buffer.from([0xdb, (length >>> 24) & 0xff, (length >> 16) & 0xff, (length >> 8) & 0xff, length & 0xff]))
    } else if (s === 'fix') parts.push(Buffer.from([0x90 | length]))
    else if (s === 16) parts.push(Buffer.from([0xdc, length >> 8, length & 0xff]))
    else parts.push(Buffer.from([0xdd, (length >>> 24) & 0xff, (length >> 16) & 0xff, (length >> 8) & 0xff, length & 0xff]))
  }
  const walk = (v: Value): void => {
    if (Array.isArray(v)) {
      header('array', v.length)
      for (const item of v) walk(item)
      return
    }
    const bytes = typeof v === 'string' ? Buffer.from(v, 'utf8') : v
    header('str', bytes.length)
    parts.push(bytes)
  }
  walk(value)
  return Buffer.concat(parts)
}

function smallest(kind: 'str' | 'array', length: number): Size {
  if (kind === 'str') return length < 32 ? 'fix' : length < 0x100 ? 8 : length < 0x10000 ? 16 : 32
  return length < 16 ? 'fix' : length < 0x10000 ? 16 : 32
}

/** The widest header that fits, or a random one of those (non-minimal encodings are valid msgpack too). */
const sizes = fc.func(fc.constantFrom<Size>('fix', 8, 16, 32)).map((pick) => (kind: 'str' | 'array', length: number): Size => {
  const wanted = pick(kind, length)
  const fits = (s: Size): boolean =>
    s === 32 || (kind === 'str' ? (s === 'fix' ? length < 32 : s === 8 ? length < 0x100 : length < 0x10000) : s === 'fix' ? length < 16 : s === 16 && length < 0x10000)
  if (kind === 'array' && wanted === 8) return fits(16) ? 16 : 32
  return fits(wanted) ? wanted : 32
})

const KNOWN = Object.values(Fields)
const streamId = fc.tuple(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })).map(([ms, seq]) => `${ms}-${seq}`)
const fieldText = fc.oneof(fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme' }), fc.string(), fc.constantFrom(...KNOWN))
const entry = fc.tuple(streamId, fc.array(fieldText, { maxLength: 12 }))
const entries = fc.array(entry, { maxLength: 20 })

/** What decoding a UTF-16 string written as UTF-8 gives (lone surrogates become U+FFFD, as Redis stores them). */
const roundTrip = (text: string): string => Buffer.from(text, 'utf8').toString('utf8')

const rejects = (run: () => unknown): void => {
  expect(run).toThrow(BackendError)
}

describe('decodePackedEntries', () => {
  it('decodes whatever the encoder writes, in any size class: ids, field names and values (any Unicode), odd and empty field lists', () => {
    fc.assert(
      fc.property(entries, sizes, (list, size) => {
        const packed = pack(
          list.map(([id, fields]) => [id, fields]),
          size,
        )
        const decoded = decodePackedEntries(packed, list.length, 1)
        expect(decoded).toEqual(list.map(([id, fields]) => ({ id, fields: fields.map(roundTrip), deliveryCount: 1 })))
      }),
      { numRuns: 300 },
    )
  })

  it('a reply cut anywhere, or with bytes after it, is a BackendError', () => {
    fc.assert(
      fc.property(entries, sizes, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 8 }), (list, size, cut, extra) => {
        const packed = pack(
          list.map(([id, fields]) => [id, fields]),
          size,
        )
        rejects(() => decodePackedEntries(packed.subarray(0, cut % packed.length), list.length))
        rejects(() => decodePackedEntries(Buffer.concat([packed, extra]), list.length))
      }),
      { numRuns: 300 },
    )
  })

  it('known field names come back as the shared strings, other names and values decoded as UTF-8', () => {
    const [decoded] = decodePackedEntries(pack([['1-1', ['payload', '{"a":"é€😀"}', 'nàme', 'x', 'traceparent', '00-…']]]), 1)
    expect(decoded?.fields).toEqual(['payload', '{"a":"é€😀"}', 'nàme', 'x', 'traceparent', '00-…'])
    expect(decoded?.fields?.[0]).toBe(Fields.payload)
  })

  it('invalid UTF-8 in a value decodes as Buffer.toString does (the XREADGROUP path), not an error', () => {
    const bad = Buffer.from([0x7b, 0xff, 0xfe, 0xc3, 0x7d])
    const [decoded] = decodePackedEntries(pack([['5-0', ['payload', bad]]]), 1)
    expect(decoded?.fields).toEqual(['payload', bad.toString()])
  })

  it('a big entry (str32, 5 MiB) decodes whole', () => {
    const big = 'x'.repeat(5 * 1024 * 1024)
    const packed = pack([['1-0', ['payload', big]], ['1-1', ['payload', 'small']]])
    expect(packed[packed.indexOf(Buffer.from('payload')) + 7]).toBe(0xdb)
    const decoded = decodePackedEntries(packed, 2)
    expect(decoded[0]?.fields?.[1]).toHaveLength(big.length)
    expect(decoded[0]?.fields?.[1] === big).toBe(true)
    expect(decoded[1]).toEqual({ id: '1-1', fields: ['payload', 'small'], deliveryCount: 1 })
  })

  it('the empty array (what cmsgpack writes for an empty table) is no entries', () => {
    expect(decodePackedEntries(Buffer.from([0x90]), 10)).toEqual([])
    expect(decodePackedEntries(Buffer.from([0xdc, 0, 0]), 10)).toEqual([])
    expect(decodePackedEntries(Buffer.from([0xdd, 0, 0, 0, 0]), 10)).toEqual([])
  })

  it('another shape is a BackendError: a map, a number, nil or false for the fields, an entry of three, a bad id, a huge count, too many entries, nothing at all', () => {
    const ok = pack([['1-1', ['a', 'b']]])
    expect(decodePackedEntries(ok, 1)).toHaveLength(1)
    const cases: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['a map', Buffer.from([0x81, 0xa1, 0x61, 0xa1, 0x62])],
      ['a number', Buffer.from([0x91, 0x92, 0xa3, 0x31, 0x2d, 0x31, 0x01])],
      ['nil fields', Buffer.from([0x91, 0x92, 0xa3, 0x31, 0x2d, 0x31, 0xc0])],
      ['false fields', Buffer.from([0x91, 0x92, 0xa3, 0x31, 0x2d, 0x31, 0xc2])],
      ['an entry of three', pack([['1-1', ['a', 'b'], 'x']])],
      ['an entry of one', pack([['1-1']])],
      ['fields not an array', pack([['1-1', 'ab']])],
      ['an id that is an array', pack([[['1-1'], ['a', 'b']]])],
      ['an id without a dash', pack([['11', ['a', 'b']]])],
      ['an id with two dashes', pack([['1-1-1', ['a', 'b']]])],
      ['an id ending with a dash', pack([['1-', ['a', 'b']]])],
      ['an id starting with a dash', pack([['-1', ['a', 'b']]])],
      ['an id of letters', pack([['1-x', ['a', 'b']]])],
      ['an empty id', pack([['', ['a', 'b']]])],
      ['an array32 count past the end', Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff, 0x92])],
      ['a str32 length past the end', Buffer.from([0x91, 0x92, 0xdb, 0xff, 0xff, 0xff, 0xff, 0x31])],
      ['a bin8 (not a str)', Buffer.from([0x91, 0x92, 0xc4, 0x03, 0x31, 0x2d, 0x31, 0x90])],
      ['two entries for a read of one', pack([['1-1', ['a', 'b']], ['1-2', ['a', 'b']]])],
    ]
    for (const [what, bytes] of cases) {
      expect(() => decodePackedEntries(bytes, 1), what).toThrow(BackendError)
    }
  })
})

describe('decodePackedReads', () => {
  const read = (...ids: string[]): Buffer => pack(ids.map((id) => [id, ['payload', id]]))

  it('one array of entries per count: the script strings in order, then empty reads', () => {
    const out = decodePackedReads([read('1-1', '1-2'), read('1-3')], [2, 2, 2])
    expect(out.map((r) => r.map((e) => e.id))).toEqual([['1-1', '1-2'], ['1-3'], []])
    expect(decodePackedReads([], [10, 10])).toEqual([[], []])
    expect(decodePackedReads(null, [10, 10])).toEqual([[], []])
    expect(decodePackedReads(undefined, [10])).toEqual([[]])
  })

  it('another shape is a BackendError: not an array, more reads than counts, a read that is no string, a short read before another, too many entries', () => {
    rejects(() => decodePackedReads(read('1-1'), [1]))
    rejects(() => decodePackedReads('x', [1]))
    rejects(() => decodePackedReads([read('1-1'), read('1-2')], [1]))
    rejects(() => decodePackedReads(['1-1'], [1]))
    rejects(() => decodePackedReads([[read('1-1')]], [1]))
    rejects(() => decodePackedReads([read('1-1'), read('1-2')], [2, 2]))
    rejects(() => decodePackedReads([read('1-1', '1-2', '1-3')], [2, 2]))
    rejects(() => decodePackedReads([read('1-1').subarray(0, 5)], [1]))
  })
})

describe('packedReadsUnsupported', () => {
  it('is true only for errors that mean nothing ran and scripts cannot be used: NOPERM for EVAL/EVALSHA, the command unknown, no cmsgpack', () => {
    const yes = [
      "NOPERM this user has no permissions to run the 'evalsha' command",
      "NOPERM this user has no permissions to run the 'eval' command or its subcommand",
      "ERR unknown command 'evalsha', with args beginning with: ",
      'RRS_NOMSGPACK this server has no cmsgpack in its Lua',
    ]
    for (const message of yes) {
      expect(packedReadsUnsupported(new Error(message)), message).toBe(true)
      expect(packedReadsUnsupported(new BackendError('Redis EVALSHA failed', { cause: new Error(message) })), message).toBe(true)
    }
    const no = [
      "NOGROUP No such key 'k' or consumer group 'g' in XREADGROUP with GROUP option",
      'NOSCRIPT No matching script. Please use EVAL.',
      "ERR The user executing the script can't run this command or subcommand",
      "NOPERM this user has no permissions to access one of the keys used as arguments",
      'read of t did not answer within 10000 ms',
      'Connection is closed.',
    ]
    for (const message of no) expect(packedReadsUnsupported(new Error(message)), message).toBe(false)
    expect(packedReadsUnsupported('NOPERM eval')).toBe(false)
  })
})
