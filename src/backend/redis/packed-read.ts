/**
 * Packed reads: read-ahead rounds as one Lua script call (`lua/readPacked-1.lua`)
 * that runs the round's XREADGROUP `>` reads and returns each read's entries as
 * ONE msgpack bulk string, decoded here straight from the reply Buffer.
 *
 * Why: a nested XREADGROUP reply is one RESP bulk string per id, field name and
 * value, each parsed by ioredis into a Buffer of its own; the packed reply is one
 * bulk string per read of up to `count` entries, and the decoder below makes
 * only the strings the engine keeps (ids, field values; known field names are
 * shared constants).
 *
 * The decoder is strict: anything that is not exactly the shape the script
 * writes (a truncated reply, a wrong tag, a length past the end, trailing
 * bytes, more entries than asked for, an id that is not a stream id) is a
 * {@link BackendError}, and the read fails like a read whose reply was lost;
 * it never yields an entry it is not sure of.
 */
import { readFileSync } from 'node:fs'
import { BackendError } from '../../errors.js'
import { Fields } from '../../event.js'
import type { ReadEntry } from '../types.js'
import type { RedisClient } from './redis-backend.js'

/** The script's name as a command on a reader's connection (`rrsReadPackedBuffer` answers with Buffers). */
const COMMAND = 'rrsReadPacked'

/**
 * No further read in a round once the packed replies of the call hold this
 * many bytes: bounds the reply (and the script's time in Redis) when entries
 * are large. The first read of a round is always done in full.
 */
export const PACKED_READ_BUDGET_BYTES = 8 << 20

let source: string | undefined
function lua(): string {
  source ??= readFileSync(new URL('./lua/readPacked-1.lua', import.meta.url), 'utf8')
  return source
}

type PackedCommand = (key: string, group: string, consumer: string, budget: number, ...counts: number[]) => Promise<unknown>

/**
 * Sends one round of packed reads on a reader's connection (the script is
 * defined on it on first use). ioredis sends the script's source (EVAL) the
 * first time on each socket, and resends a call answered NOSCRIPT (the script
 * cache was flushed: nothing ran) as EVAL.
 */
export function sendPackedReads(client: RedisClient, key: string, group: string, consumer: string, counts: readonly number[]): Promise<unknown> {
  const commands = client as unknown as Record<string, PackedCommand | undefined>
  if (typeof commands[`${COMMAND}Buffer`] !== 'function') client.defineCommand(COMMAND, { lua: lua(), numberOfKeys: 1 })
  const send = commands[`${COMMAND}Buffer`] as PackedCommand
  return send.call(client, key, group, consumer, PACKED_READ_BUDGET_BYTES, ...counts)
}

/**
 * True when an error of a packed read means this reader cannot use packed
 * reads at all, and nothing ran: the ACL user may not run scripts (`NOPERM`
 * for EVAL/EVALSHA), the command is renamed away (`unknown command`), or the
 * server's Lua has no cmsgpack (the script checks before reading).
 */
export function packedReadsUnsupported(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const message = e.message
    if (/\bNOPERM\b[^\n]*\beval(?:sha)?\b/i.test(message) || /\bunknown command\b[^\n]*\beval(?:sha)?\b/i.test(message) || message.includes('RRS_NOMSGPACK')) return true
  }
  return false
}

/** Loggers already told that packed reads are off (one notice per logger, not per reader). */
const noticed = new WeakSet<object>()

/** Logs once per logger (at info) that a reader falls back to plain XREADGROUP, and why. */
export function noticePackedFallback(logger: { info(object: object, message: string): void } | undefined, error: unknown): void {
  if (logger === undefined || noticed.has(logger)) return
  noticed.add(logger)
  const reason = error instanceof Error ? error.message.split('\n')[0] : String(error)
  logger.info({ reason }, 'packed reads unavailable (no script permission or no cmsgpack): reading with XREADGROUP')
}

/** What Node's Buffer has besides its typed API: the direct slice decoders behind `toString`. */
interface Slicing {
  latin1Slice(start: number, end: number): string
  utf8Slice(start: number, end: number): string
}

/**
 * The field names the engine reads, as one shared string each and as bytes (parallel arrays, looked up by index):
 * the compact layout's two first, then the five-field layout's, so that most entries match on the first tries.
 */
const KNOWN_NAMES: readonly string[] = [Fields.meta, Fields.payload, ...Object.values(Fields).filter((name) => name !== Fields.meta && name !== Fields.payload)]
const KNOWN_BYTES: readonly Uint8Array[] = KNOWN_NAMES.map((name) => Buffer.from(name))

const malformed = (why: string): BackendError => new BackendError(`malformed packed read reply: ${why}`)

/**
 * A cursor over one msgpack string of the script: an array of entries, each
 * `[id, [field, value, …]]`, every id and field a msgpack str.
 */
class Reader {
  readonly #buf: Buffer
  readonly #end: number
  #at = 0

  constructor(buf: Buffer) {
    this.#buf = buf
    this.#end = buf.length
  }

  get done(): boolean {
    return this.#at === this.#end
  }

  #byte(): number {
    if (this.#at >= this.#end) throw malformed('truncated')
    return this.#buf[this.#at++] as number
  }

  #uint(bytes: 2 | 4): number {
    const at = this.#at
    if (at + bytes > this.#end) throw malformed('truncated')
    this.#at = at + bytes
    return bytes === 2 ? this.#buf.readUInt16BE(at) : this.#buf.readUInt32BE(at)
  }

  /** An array header's length (fixarray, array16, array32); at most the bytes left (each element takes one at least). */
  array(): number {
    const tag = this.#byte()
    let length: number
    if (tag >= 0x90 && tag <= 0x9f) length = tag - 0x90
    else if (tag === 0xdc) length = this.#uint(2)
    else if (tag === 0xdd) length = this.#uint(4)
    else throw malformed(`expected an array, found tag 0x${tag.toString(16)}`)
    if (length > this.#end - this.#at) throw malformed('truncated')
    return length
  }

  /** A str header (fixstr, str8, str16, str32): the start of its bytes, after checking they are all there. */
  #str(): number {
    const tag = this.#byte()
    let length: number
    if (tag >= 0xa0 && tag <= 0xbf) length = tag - 0xa0
    else if (tag === 0xd9) length = this.#byte()
    else if (tag === 0xda) length = this.#uint(2)
    else if (tag === 0xdb) length = this.#uint(4)
    else throw malformed(`expected a string, found tag 0x${tag.toString(16)}`)
    const start = this.#at
    if (start + length > this.#end) throw malformed('truncated')
    this.#at = start + length
    return start
  }

  /** A stream id (`<ms>-<seq>`, ASCII digits): anything else is no id of XREADGROUP's. */
  id(): string {
    const start = this.#str()
    const end = this.#at
    const buf = this.#buf
    let dash = -1
    for (let i = start; i < end; i++) {
      const c = buf[i] as number
      if (c === 0x2d && dash < 0) dash = i
      else if (c < 0x30 || c > 0x39) throw malformed('an entry id is not a stream id')
    }
    if (dash <= start || dash >= end - 1) throw malformed('an entry id is not a stream id')
    return (buf as unknown as Slicing).latin1Slice(start, end)
  }

  /** A field value (UTF-8, malformed sequences replaced as `Buffer.toString` does). */
  text(): string {
    const start = this.#str()
    return (this.#buf as unknown as Slicing).utf8Slice(start, this.#at)
  }

  /** A field name: a known one is its shared string, others are decoded. */
  name(): string {
    const start = this.#str()
    const end = this.#at
    const length = end - start
    const buf = this.#buf
    for (let k = 0; k < KNOWN_BYTES.length; k++) {
      const bytes = KNOWN_BYTES[k] as Uint8Array
      if (bytes.length !== length) continue
      let i = 0
      while (i < length && bytes[i] === buf[start + i]) i++
      if (i === length) return KNOWN_NAMES[k] as string
    }
    return (buf as unknown as Slicing).utf8Slice(start, end)
  }
}

/**
 * The entries of one read's msgpack string, as ReadEntries with
 * `deliveryCount` (1: new entries).
 *
 * @throws {BackendError} on any byte or shape the script does not write, or more than `max` entries
 */
export function decodePackedEntries(packed: Buffer, max: number, deliveryCount = 1): ReadEntry[] {
  const reader = new Reader(packed)
  const count = reader.array()
  if (count > max) throw malformed(`${count} entries for a read of at most ${max}`)
  const out = new Array<ReadEntry>(count)
  for (let e = 0; e < count; e++) {
    if (reader.array() !== 2) throw malformed('an entry is not [id, fields]')
    const id = reader.id()
    const n = reader.array()
    const fields = new Array<string>(n)
    for (let i = 0; i < n; i++) fields[i] = i % 2 === 0 ? reader.name() : reader.text()
    out[e] = { id, fields, deliveryCount }
  }
  if (!reader.done) throw malformed('trailing bytes')
  return out
}

/**
 * A reply of `readPacked-1.lua` as one array of entries per read asked for
 * (`counts`): the script's strings in order, then empty reads. Only the last
 * read done may be short (the script stops there).
 *
 * @throws {BackendError} when the reply is not the script's (see {@link decodePackedEntries})
 */
export function decodePackedReads(reply: unknown, counts: readonly number[]): ReadEntry[][] {
  if (reply === null || reply === undefined) return counts.map(() => [])
  if (!Array.isArray(reply)) throw malformed('not an array')
  const parts = reply as unknown[]
  if (parts.length > counts.length) throw malformed(`${parts.length} reads for ${counts.length}`)
  const out: ReadEntry[][] = []
  for (let i = 0; i < counts.length; i++) {
    if (i >= parts.length) {
      out.push([])
      continue
    }
    const part = parts[i]
    if (!Buffer.isBuffer(part)) throw malformed('a read is not a string')
    const max = counts[i] as number
    const entries = decodePackedEntries(part, max)
    if (entries.length < max && i < parts.length - 1) throw malformed('a short read is followed by another')
    out.push(entries)
  }
  return out
}
