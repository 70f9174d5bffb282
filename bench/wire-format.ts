/**
 * What the layout of a stream entry costs the consumer's client: one
 * XREADGROUP reply of 100 entries is captured from a private redis-server per
 * layout and protocol, then fed to ioredis' own RESP decoder in a loop, then
 * turned into strings, then parsed as far as a consumer needs (the envelope,
 * the payload). Prints ns per entry (the best of many rounds: the floor of
 * the cost, the least disturbed by other work on the machine).
 *
 *   npx tsx bench/wire-format.ts
 *
 * Layouts: the library's five fields; a compact two-field layout (`meta`, a
 * JSON array [id, name, ts, headers], and `payload`); the hand-written
 * one-field envelope.
 */
import { randomUUID } from 'node:crypto'
import { createRequire } from 'node:module'
import { Redis } from 'ioredis'
import { startRedisServer } from '../test/support/redis-server.js'

const require = createRequire(import.meta.url)
interface DecoderLike {
  write(chunk: Buffer): void
}
const { Decoder, RESP_TYPES } = require('ioredis/built/resp/decoder.js') as {
  Decoder: new (config: { getTypeMapping: () => unknown; onReply: (reply: unknown) => void; onErrorReply: () => void; onPush: () => void }) => DecoderLike
  RESP_TYPES: Record<string, number>
}
const { convertBufferToString } = require('ioredis/built/utils/index.js') as { convertBufferToString: (value: unknown, encoding: string) => unknown }

const PAYLOAD = { userId: 123, email: 'user@example.com', plan: 'premium', tags: ['a', 'b', 'c'] }
const layouts: Record<string, { fields: (i: number) => string[]; parse: (fields: string[]) => unknown }> = {
  'five fields': {
    fields: (i) => ['id', randomUUID(), 'name', 'user.action', 'ts', String(Date.now()), 'headers', '{}', 'payload', JSON.stringify({ ...PAYLOAD, i })],
    parse: (f) => {
      let payload = ''
      let name = ''
      for (let i = 0; i + 1 < f.length; i += 2) {
        if (f[i] === 'payload') payload = f[i + 1] as string
        else if (f[i] === 'name') name = f[i + 1] as string
      }
      return [name, JSON.parse(payload) as unknown]
    },
  },
  'compact (meta + payload)': {
    fields: (i) => ['meta', JSON.stringify([randomUUID(), 'user.action', Date.now(), {}]), 'payload', JSON.stringify({ ...PAYLOAD, i })],
    parse: (f) => [JSON.parse(f[1] as string) as unknown, JSON.parse(f[3] as string) as unknown],
  },
  'one field (hand-written)': {
    fields: (i) => ['event', JSON.stringify({ id: randomUUID(), type: 'user.action', time: Date.now(), data: { ...PAYLOAD, i } })],
    parse: (f) => JSON.parse(f[1] as string) as unknown,
  },
}

// The mapping ioredis uses by default (replyMapping 'legacy'): strings decode to Buffers, maps to flat arrays.
const legacy = {
  [RESP_TYPES['SIMPLE_STRING'] as number]: Buffer,
  [RESP_TYPES['BLOB_STRING'] as number]: Buffer,
  [RESP_TYPES['VERBATIM_STRING'] as number]: Buffer,
  [RESP_TYPES['BIG_NUMBER'] as number]: String,
  [RESP_TYPES['DOUBLE'] as number]: Buffer,
  [RESP_TYPES['BOOLEAN'] as number]: Number,
  [RESP_TYPES['MAP'] as number]: Array,
  [RESP_TYPES['SET'] as number]: Array,
}

async function capture(url: string, protocol: 2 | 3, fields: (i: number) => string[]): Promise<Buffer> {
  const redis = new Redis(url, { protocol, enableAutoPipelining: false })
  const key = `wire-${randomUUID()}`
  try {
    const pipeline = redis.pipeline()
    for (let i = 0; i < 100; i++) pipeline.xadd(key, '*', ...fields(i))
    await pipeline.exec()
    await redis.xgroup('CREATE', key, 'g', '0')
    const chunks: Buffer[] = []
    const listener = (d: Buffer): void => void chunks.push(Buffer.from(d))
    redis.stream.on('data', listener)
    await redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'COUNT', 100, 'STREAMS', key, '>')
    redis.stream.off('data', listener)
    return Buffer.concat(chunks)
  } finally {
    await redis.quit()
  }
}

/** The best of `rounds` rounds of `iterations` calls, in ns per entry (100 entries per call). */
function best(fn: () => void, rounds = 80, iterations = 40): number {
  let min = Infinity
  for (let r = 0; r < rounds; r++) {
    const started = process.hrtime.bigint()
    for (let i = 0; i < iterations; i++) fn()
    min = Math.min(min, Number(process.hrtime.bigint() - started) / iterations / 100)
  }
  return min
}

const entriesOf = (reply: unknown): [string, string[]][] => {
  const first = (reply as unknown[])[0]
  return (Array.isArray(first) ? first[1] : (reply as unknown[])[1]) as [string, string[]][]
}

const server = await startRedisServer()
try {
  console.log('ns per entry (best of 80 rounds)   | RESP decode | to strings | parse | total')
  for (const protocol of [3, 2] as const) {
    for (const [name, layout] of Object.entries(layouts)) {
      const bytes = await capture(server.url, protocol, layout.fields)
      let reply: unknown
      const decoder = new Decoder({ getTypeMapping: () => legacy, onReply: (r) => (reply = r), onErrorReply: () => undefined, onPush: () => undefined })
      decoder.write(bytes)
      const strings = convertBufferToString(reply, 'utf8')
      const entries = entriesOf(strings)
      const decode = best(() => decoder.write(bytes))
      const convert = best(() => convertBufferToString(reply, 'utf8'))
      const parse = best(() => {
        for (const [, fields] of entries) layout.parse(fields)
      })
      const label = `RESP${String(protocol)} ${name}, ${String(Math.round(bytes.length / 100))} B`.padEnd(36)
      console.log(`${label} | ${decode.toFixed(0).padStart(11)} | ${convert.toFixed(0).padStart(10)} | ${parse.toFixed(0).padStart(5)} | ${(decode + convert + parse).toFixed(0).padStart(5)}`)
    }
  }
} finally {
  await server.stop()
}
