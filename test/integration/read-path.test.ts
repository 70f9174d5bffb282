import { Redis } from 'ioredis'
import { describe, expect, it, onTestFinished } from 'vitest'
import { RedisBackend } from '../../src/backend/redis/redis-backend.js'
import { newRedis, randomName, redisUrl } from '../support/redis.js'

/**
 * The reader decodes XREADGROUP replies itself (from Buffers, known field
 * names as shared strings): what it returns must be exactly what Redis stores,
 * whatever the names, the bytes and the protocol of the reader's connection.
 */
const ENTRIES: string[][] = [
  ['id', 'e1', 'name', 'user.signup', 'ts', '1718000000000', 'headers', '{"source":"web"}', 'payload', '{"a":1}'],
  // Unknown names, some as long as a known one ("nome"/"name", "payloaX"/"payload", "i"/"id" prefixes), an empty value.
  ['nome', 'x', 'payloaX', 'y', 'i', 'z', 'idx', '', 'payload', '"plain"', 'name', 'n'],
  // Multi-byte UTF-8 in names and values, a lone known name with a value that looks like a number.
  ['name', 'café.ordered ☕', 'payload', '{"text":"日本語 🎉 é"}', 'ümlaut-field', 'wert ß', 'id', '42'],
  // A replay marker and the optional fields.
  ['id', 'e4', 'name', 'n', 'payload', 'null', 'cid', 'c-1', 'traceparent', '00-abc-def-01', 'replay_group', 'g1'],
]

const configurations: [string, (url: string) => Redis][] = [
  ['RESP3, legacy reply mapping (the default)', (url) => new Redis(url, { maxRetriesPerRequest: 3 })],
  ['RESP2', (url) => new Redis(url, { maxRetriesPerRequest: 3, protocol: 2 })],
  ['RESP3, resp3 reply mapping (a map reply)', (url) => new Redis(url, { maxRetriesPerRequest: 3, protocol: 3, replyMapping: 'resp3' })],
  // A user's client duplicated for the reader keeps its autopipelining (ioredis 6 loses callBuffer's command name there).
  ['an autopipelined reader connection', (url) => new Redis(url, { maxRetriesPerRequest: 3, enableAutoPipelining: true })],
]

describe('the Redis reader', () => {
  for (const [label, blockingClient] of configurations) {
    it(`returns every entry's fields as stored: ${label}`, async () => {
      const url = redisUrl()
      const backend = new RedisBackend({
        // Autopipelined, as the shared client always is: own pending entries are re-read on it.
        client: new Redis(url, { maxRetriesPerRequest: 3, enableAutoPipelining: true }),
        createBlockingClient: () => blockingClient(url),
        keyPrefix: 'event:',
        ownsClient: true,
      })
      const redis = newRedis()
      onTestFinished(async () => {
        await backend.close()
        await redis.quit()
      })
      const topic = randomName('read-path')
      const group = randomName('g')
      const key = `event:stream:{${topic}}`
      await backend.ensureGroup(topic, group, 'beginning')
      const ids: string[] = []
      for (const fields of ENTRIES) ids.push((await redis.xadd(key, '*', ...fields)) as string)

      const reader = backend.createReader()
      const read = await reader.read(topic, group, 'c1', { count: 10, blockMs: 0, from: 'new' })
      expect(read.map((e) => e.id)).toEqual(ids)
      expect(read.map((e) => e.fields)).toEqual(ENTRIES)
      expect(read.map((e) => e.deliveryCount)).toEqual(ENTRIES.map(() => 1))

      // The same entries as the plain client reads them.
      const stored = await redis.xrange(key, '-', '+')
      expect(read.map((e) => [e.id, e.fields])).toEqual(stored)

      // Own pending entries, one of them deleted meanwhile: its fields are null, the counts come from XPENDING.
      await redis.xdel(key, ids[1] as string)
      const again = await reader.read(topic, group, 'c1', { count: 10, blockMs: 0, from: 'pending', after: '0' })
      expect(again.map((e) => e.id)).toEqual(ids)
      expect(again.map((e) => e.fields)).toEqual([ENTRIES[0], null, ENTRIES[2], ENTRIES[3]])
      expect([0, 2, 3].map((i) => again[i]?.deliveryCount)).toEqual([2, 2, 2])
      await reader.close()
    })
  }
})
