/**
 * A/B: the same scenario on two checkouts of this repository (each with
 * node_modules and, for BENCH_DIST=1, a build), interleaved, a fresh process
 * per run, on one private redis-server. Prints rates and CPU per message per
 * run and their medians: the way to see a change of a few per cent on a busy
 * machine.
 *
 *   npx tsx bench/ab.ts <dirA> <dirB> [drain|drain-lazy|subscribe|publish|batch|publish-unsafe|batch-unsafe] [count] [runs]
 *
 * `-unsafe`: the dedupe window off (EVENT_PUBLISH_DEDUPE_WINDOW=0).
 *
 * `AB_ENV_A` / `AB_ENV_B` (`K=V,K=V`) set variables for one side only, e.g.
 * `AB_ENV_A=BENCH_WIRE_FORMAT=fields` with the same directory twice compares
 * the five-field layout (A) with the default compact one (B). A drain's
 * prefill is written in the layout its side's library writes: the side's
 * BENCH_WIRE_FORMAT (`compact` | `fields`), else that checkout's own default
 * (five fields before the compact default, e.g. /work/wt-base) — so an A/B
 * of two checkouts measures what a user of each gets; set
 * BENCH_WIRE_FORMAT=fields (or compact) for both to hold the layout fixed.
 */
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { startRedisServer } from '../test/support/redis-server.js'
import type { ChildResult, ChildSpec } from './child.js'
import { median, runChild } from './harness.js'
import { prefill, randomTopic, rawClient, type DrainOptions, type WireFormat } from './scenarios.js'

const [dirA, dirB, kind = 'drain', countText = '100000', runsText = '5'] = process.argv.slice(2)
if (dirA === undefined || dirB === undefined) throw new Error('usage: ab.ts <dirA> <dirB> [scenario] [count] [runs]')
const count = Number(countText)
const runs = Number(runsText)
const dirs = [resolve(dirA), resolve(dirB)]
const sideEnv = (text: string | undefined): Record<string, string> =>
  Object.fromEntries((text ?? '').split(',').filter((kv) => kv.includes('=')).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]))
const envs = [sideEnv(process.env['AB_ENV_A']), sideEnv(process.env['AB_ENV_B'])]

/** The layout the library of checkout `dir` writes in a child with `env`: its BENCH_WIRE_FORMAT, else that checkout's default. */
async function layoutOf(dir: string, env: Readonly<Record<string, string>>): Promise<WireFormat> {
  const wanted = env['BENCH_WIRE_FORMAT'] ?? process.env['BENCH_WIRE_FORMAT']
  if (wanted === 'compact') return 'compact'
  if (wanted === 'fields') return 'five-field'
  if (wanted !== undefined && wanted !== '') throw new Error(`BENCH_WIRE_FORMAT=${wanted}: must be "compact" or "fields"`)
  const entry = join(dir, process.env['BENCH_DIST'] === '1' ? 'dist/src/index.js' : 'src/index.ts')
  const library = (await import(pathToFileURL(entry).href)) as { loadConfig(options: object, env: object): { wireFormat?: string } }
  return library.loadConfig({}, {}).wireFormat === 'compact' ? 'compact' : 'five-field'
}
const layouts = [await layoutOf(dirs[0] as string, envs[0] ?? {}), await layoutOf(dirs[1] as string, envs[1] ?? {})]
console.log(`A ${dirs[0] ?? ''} (${layouts[0] ?? ''} layout), B ${dirs[1] ?? ''} (${layouts[1] ?? ''} layout)`)
const server = await startRedisServer()
const admin = rawClient(server.url, false)
const results: ChildResult[][] = [[], []]
try {
  for (let run = 0; run < runs; run++) {
    for (const side of run % 2 === 0 ? [0, 1] : [1, 0]) {
      await admin.flushall()
      const url = server.url
      let spec: ChildSpec
      if (kind === 'publish' || kind === 'publish-unsafe') spec = { kind: 'publish', side: 'library', url, count, concurrency: 1_000, retrySafe: kind === 'publish' }
      else if (kind === 'batch' || kind === 'batch-unsafe') spec = { kind: 'batch', side: 'library', url, count, size: 100, retrySafe: kind === 'batch' }
      else {
        const topic = randomTopic('ab')
        await prefill(url, topic, count, layouts[side] ?? 'five-field')
        const options: DrainOptions =
          kind === 'subscribe' ? { concurrency: 10, readPayload: true, viaSubscribe: true } : { batchSize: 100, concurrency: 100, readPayload: kind === 'drain' }
        spec = { kind: 'drain', side: 'library', url, topic, count, options }
      }
      const result = await runChild(spec, envs[side] ?? {}, join(dirs[side] as string, 'bench/child.ts'))
      results[side]?.push(result)
      console.log(`  run ${run + 1} ${side === 0 ? 'A' : 'B'}: ${Math.round(result.rate ?? 0).toLocaleString('en-US')} msg/s, CPU ${((result.cpuMs * 1_000) / count).toFixed(2)} µs/msg`)
    }
  }
} finally {
  await admin.quit()
  await server.stop()
}
const summary = (list: ChildResult[]): [number, number] => [median(list.map((r) => r.rate ?? 0)), median(list.map((r) => (r.cpuMs * 1_000) / count))]
const [rateA, cpuA] = summary(results[0] ?? [])
const [rateB, cpuB] = summary(results[1] ?? [])
console.log(`A ${dirs[0] ?? ''}: median ${Math.round(rateA).toLocaleString('en-US')} msg/s, ${cpuA.toFixed(2)} µs/msg`)
console.log(`B ${dirs[1] ?? ''}: median ${Math.round(rateB).toLocaleString('en-US')} msg/s, ${cpuB.toFixed(2)} µs/msg`)
console.log(`B/A: rate ${(rateB / rateA).toFixed(3)}, CPU per message ${(cpuB / cpuA).toFixed(3)}`)
