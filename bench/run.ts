/**
 * Benchmarks rx-redis-streams against the same work done with raw ioredis, in
 * one run, on a private redis-server this script starts (never the one on
 * 6379). Prints messages/s, latency percentiles, peak RSS and ratios.
 *
 *   npm run bench                 # full sizes
 *   BENCH_SCALE=0.1 npm run bench # a quick look
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { startRedisServer } from '../test/support/redis-server.js'
import {
  consumeLibrary,
  consumeRaw,
  latencyLibrary,
  latencyRaw,
  prefill,
  publishBatchLibrary,
  publishBatchRaw,
  publishOneLibrary,
  publishOneRaw,
  type LatencyResult,
} from './scenarios.js'

const scale = Number(process.env['BENCH_SCALE'] ?? '1')
const n = (count: number): number => Math.max(1_000, Math.round(count * scale))

interface Row {
  readonly name: string
  readonly library: string
  readonly raw: string
  readonly ratio: string
  readonly target: string
}
const rows: Row[] = []
const fmt = (x: number): string => Math.round(x).toLocaleString('en-US')

function throughputRow(name: string, library: number, raw: number, target: number): void {
  rows.push({ name, library: `${fmt(library)} msg/s`, raw: `${fmt(raw)} msg/s`, ratio: (library / raw).toFixed(2), target: `≥ ${target}` })
  console.log(`  ${name}: library ${fmt(library)} msg/s, raw ${fmt(raw)} msg/s, ratio ${(library / raw).toFixed(2)}`)
}

/** Runs one scenario in a child process and returns its JSON result (peak RSS needs a process of its own). */
function child(mode: string, url: string, count: number): Promise<{ rate: number; maxRssMiB: number; baselineMiB: number }> {
  return new Promise((resolve, reject) => {
    const script = fileURLToPath(new URL('./rss-child.ts', import.meta.url))
    const proc = spawn(process.execPath, ['--import', 'tsx', script, mode, url, String(count)], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
    proc.on('error', reject)
    proc.on('exit', (code) => {
      if (code !== 0) reject(new Error(`${mode} child exited with ${code}`))
      else resolve(JSON.parse(out.trim().split('\n').pop() ?? '{}') as { rate: number; maxRssMiB: number; baselineMiB: number })
    })
  })
}

const server = await startRedisServer()
console.log(`private redis-server at ${server.url} (scale ${scale})`)
try {
  // (a) one publish at a time, 1,000 concurrent
  {
    const count = n(200_000)
    const raw = await publishOneRaw(server.url, count, 1_000)
    const lib = await publishOneLibrary(server.url, count, 1_000)
    throughputRow('(a) publish, 1,000 concurrent', lib, raw, 0.8)
  }
  // (b) publishBatch of 100
  {
    const count = n(500_000)
    const raw = await publishBatchRaw(server.url, count, 100)
    const lib = await publishBatchLibrary(server.url, count, 100)
    throughputRow('(b) publishBatch of 100', lib, raw, 0.8)
  }
  // (c) drain a backlog of 200,000: consume + ack, no-op handler, batchSize 100
  for (const concurrency of [10, 100]) {
    const count = n(200_000)
    const rawTopic = await prefill(server.url, count)
    const raw = await consumeRaw(server.url, rawTopic, count, 100)
    const libTopic = await prefill(server.url, count)
    const lib = await consumeLibrary(server.url, libTopic, count, 100, concurrency)
    throughputRow(`(c) consume + ack, concurrency ${concurrency}`, lib, raw, 0.6)
  }
  // (d) end-to-end latency at a fixed 5,000 events/s
  {
    const seconds = Math.max(2, Math.round(5 * scale))
    const raw: LatencyResult = await latencyRaw(server.url, 5_000, seconds)
    const lib: LatencyResult = await latencyLibrary(server.url, 5_000, seconds)
    rows.push({
      name: '(d) latency at 5,000/s p50 / p99',
      library: `${lib.p50.toFixed(2)} / ${lib.p99.toFixed(2)} ms`,
      raw: `${raw.p50.toFixed(2)} / ${raw.p99.toFixed(2)} ms`,
      ratio: `${(lib.p50 / raw.p50).toFixed(2)} / ${(lib.p99 / raw.p99).toFixed(2)}`,
      target: 'report',
    })
    console.log(`  (d) latency: library p50 ${lib.p50.toFixed(2)} ms p99 ${lib.p99.toFixed(2)} ms; raw p50 ${raw.p50.toFixed(2)} ms p99 ${raw.p99.toFixed(2)} ms`)
  }
  // (e) peak RSS while draining 1,000,000 events, each side in a process of its own
  {
    const count = n(1_000_000)
    await server.restart() // start (e) with an empty server: the earlier backlogs are gone
    const rawTopic = await prefill(server.url, count)
    const raw = await child('raw', `${server.url}|${rawTopic}`, count)
    const libTopic = await prefill(server.url, count)
    const lib = await child('library', `${server.url}|${libTopic}`, count)
    rows.push({
      name: `(e) peak RSS draining ${fmt(count)}`,
      library: `${lib.maxRssMiB.toFixed(0)} MiB (${fmt(lib.rate)} msg/s)`,
      raw: `${raw.maxRssMiB.toFixed(0)} MiB (${fmt(raw.rate)} msg/s)`,
      ratio: `+${(lib.maxRssMiB - raw.maxRssMiB).toFixed(0)} MiB`,
      target: '≤ raw + 50 MiB',
    })
  }
} finally {
  await server.stop()
}

console.log('')
console.table(rows)
