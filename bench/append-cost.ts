/**
 * Redis's own time per appended entry for each append script, from
 * `INFO commandstats` of a private redis-server this script starts: the plain
 * append (append-1.lua), the retry-safe append (appendOnce-2.lua) with and
 * without the earlier layout's lookup (the `MGET` a process does for one
 * window after it starts), the retry-safe append with one part taken out (to
 * see what each part costs), and a pipeline of plain `XADD`s. Each call
 * appends `APPEND_M` entries of the compact layout to a topic whose current
 * dedupe bucket already holds 10,000 ids; variants alternate round by round
 * and each figure is the median of the rounds.
 *
 *   npx tsx bench/append-cost.ts
 *   APPEND_M=128 APPEND_CALLS=400 APPEND_ROUNDS=7 npx tsx bench/append-cost.ts
 */
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Redis } from 'ioredis'
import { startRedisServer } from '../test/support/redis-server.js'

const M = Number(process.env['APPEND_M'] ?? '50')
const CALLS = Number(process.env['APPEND_CALLS'] ?? '600')
const ROUNDS = Math.max(1, Number(process.env['APPEND_ROUNDS'] ?? '5'))
const PREFILL_IDS = 10_000

const lua = (name: string): string => readFileSync(new URL(`../src/backend/redis/lua/${name}`, import.meta.url), 'utf8')
/** The script with one part replaced; throws when the part is not found (the script changed: update this bench). */
function without(script: string, part: string | RegExp, instead = ''): string {
  const changed = script.replace(part, instead)
  if (changed === script) throw new Error(`append-cost: ${String(part)} not found in appendOnce-2.lua`)
  return changed
}

const once = lua('appendOnce-2.lua')
const LEGACY = 'event:published:{t}:'
/** name -> [script, legacy prefix]; `xadd` is the pipeline of plain XADDs. */
const variants: Record<string, readonly [string, string]> = {
  'retry-safe': [once, ''],
  'retry-safe + earlier-layout lookup': [once, LEGACY],
  'retry-safe without HSET': [without(once, /for from = 1, f, 2 \* CHUNK do[\s\S]*?\nend\n/), ''],
  'retry-safe without HMGET': [without(once, 'lookup(seen, cur, false)\n'), ''],
  'retry-safe without ACL probe': [without(once, 'if redis.acl_check_cmd then\n  local probe', 'if false then\n  local probe'), ''],
  plain: [lua('append-1.lua'), ''],
  xadd: ['', ''],
}

const server = await startRedisServer()
const redis = new Redis(server.url, { enableAutoPipelining: false })
const STREAM = 'event:stream:{t}'
const BASE = 'event:published:{t}'
const meta = (): string => JSON.stringify([randomUUID(), 'bench.event', Date.now(), {}])
const payload = JSON.stringify({ userId: 123, email: 'user@example.com', plan: 'premium', tags: ['a', 'b', 'c'] })
/** One call's packed values: `[event id,] 4, meta, <meta>, payload, <payload>` per entry, joined by NUL. */
function packed(withIds: boolean): string {
  const values: string[] = []
  for (let j = 0; j < M; j++) {
    if (withIds) values.push(randomUUID())
    values.push('4', 'meta', meta(), 'payload', payload)
  }
  return values.join('\0')
}
async function usec(command: string): Promise<number> {
  const info = await redis.info('commandstats')
  return Number(new RegExp(`cmdstat_${command}:calls=\\d+,usec=(\\d+)`).exec(info)?.[1] ?? NaN)
}

try {
  const shas = new Map<string, string>()
  for (const [name, [script]] of Object.entries(variants)) if (script !== '') shas.set(name, (await redis.script('LOAD', script)) as string)
  const onceSha = shas.get('retry-safe') as string
  const names = Object.keys(variants)
  const perEntry = new Map<string, number[]>()
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of [...names.slice(round % names.length), ...names.slice(0, round % names.length)]) {
      const [, legacy] = variants[name] as readonly [string, string]
      await redis.flushall('SYNC')
      // A live topic's bucket: ids appended earlier in the window.
      for (let filled = 0; filled < PREFILL_IDS; filled += M) await redis.evalsha(onceSha, 2, STREAM, BASE, '', '300000', '', packed(true))
      let total = 0
      for (let c = 0; c < CALLS; c++) {
        const sha = shas.get(name)
        let args: (string | number)[] | undefined
        if (name === 'plain') args = [sha as string, 1, STREAM, '', packed(false)]
        else if (sha !== undefined) args = [sha, 2, STREAM, BASE, '', '300000', legacy, packed(true)]
        await redis.config('RESETSTAT')
        if (args === undefined) {
          const pipeline = redis.pipeline()
          for (let j = 0; j < M; j++) pipeline.xadd(STREAM, '*', 'meta', meta(), 'payload', payload)
          await pipeline.exec()
          total += await usec('xadd')
        } else {
          await redis.evalsha(...(args as [string, number, ...string[]]))
          total += await usec('evalsha')
        }
      }
      const list = perEntry.get(name) ?? []
      list.push(total / CALLS / M)
      perEntry.set(name, list)
    }
  }
  const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN
  console.log(`Redis time per entry, calls of ${M} entries, medians of ${ROUNDS} rounds of ${CALLS} calls:`)
  console.log('')
  console.log('| append | µs per entry | µs per call |')
  console.log('|---|---|---|')
  for (const name of names) {
    const m = median(perEntry.get(name) ?? [])
    console.log(`| ${name === 'xadd' ? `pipeline of ${M} XADDs` : name} | ${m.toFixed(2)} | ${(m * M).toFixed(0)} |`)
  }
} finally {
  await redis.quit()
  await server.stop()
}
