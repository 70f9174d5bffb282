/**
 * Runs one benchmark scenario in a process of its own and prints its result
 * (with the process's peak RSS) as one JSON line:
 *
 *   node --import tsx bench/child.ts '<json spec>'
 *
 * Every side loads the same modules, so their baselines match. With
 * `BENCH_CPU_PROFILE=<file>`, the scenario itself (not the start-up) is
 * CPU-profiled into that file (a `.cpuprofile`, see bench/profile.ts).
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { delayed, drain, latency, publishBatch, publishOne, type DrainOptions, type Side } from './scenarios.js'

/** What the parent asks for. */
export type ChildSpec =
  | { readonly kind: 'publish'; readonly side: Side; readonly url: string; readonly count: number; readonly concurrency: number; readonly retrySafe?: boolean }
  | { readonly kind: 'batch'; readonly side: Side; readonly url: string; readonly count: number; readonly size: number; readonly retrySafe?: boolean }
  | { readonly kind: 'drain'; readonly side: Side; readonly url: string; readonly topic: string; readonly count: number; readonly options: DrainOptions }
  | { readonly kind: 'latency'; readonly side: Side; readonly url: string; readonly rate: number; readonly seconds: number; readonly retrySafe?: boolean }
  | { readonly kind: 'delayed'; readonly side: 'library'; readonly url: string; readonly count: number; readonly delayMs: number; readonly seconds: number }

/** What the child prints. */
export interface ChildResult {
  /** Messages per second (throughput scenarios). */
  readonly rate?: number
  /** Latency percentiles in ms (latency scenario; delayed: lateness after the due time). */
  readonly p50?: number
  readonly p99?: number
  /** Peak resident set size of the process, MiB. */
  readonly maxRssMiB: number
  /** RSS before the scenario started, MiB. */
  readonly baselineMiB: number
  /** CPU time (user + system) the process spent on the scenario, ms: steadier than rates on a busy machine. */
  readonly cpuMs: number
  /** The part of `cpuMs` spent on the main thread (the JavaScript; the rest is V8's GC helpers and background compiler), ms; Linux only. */
  readonly mainCpuMs?: number
}

/** CPU time of the main thread so far, ms (Linux: /proc/self/task/<pid>/stat, in clock ticks of 10 ms); undefined elsewhere. */
function mainThreadCpuMs(): number | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${String(process.pid)}/stat`, 'utf8')
    // The fields after the command name (which may hold spaces, in parentheses): utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) * 10
  } catch {
    return undefined
  }
}

const mib = (bytes: number): number => bytes / 1024 / 1024

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as ChildSpec
  const profileFile = process.env['BENCH_CPU_PROFILE']
  const session = profileFile === undefined ? undefined : new Session()
  if (session !== undefined) {
    session.connect()
    await session.post('Profiler.enable')
    await session.post('Profiler.setSamplingInterval', { interval: 200 })
    await session.post('Profiler.start')
  }
  const baselineMiB = mib(process.memoryUsage.rss())
  const cpuBefore = process.cpuUsage()
  const mainBefore = mainThreadCpuMs()
  let result: Omit<ChildResult, 'maxRssMiB' | 'baselineMiB' | 'cpuMs'>
  switch (spec.kind) {
    case 'publish':
      result = { rate: await publishOne(spec.side, spec.url, spec.count, spec.concurrency, spec.retrySafe ?? true) }
      break
    case 'batch':
      result = { rate: await publishBatch(spec.side, spec.url, spec.count, spec.size, spec.retrySafe ?? true) }
      break
    case 'drain':
      result = { rate: await drain(spec.side, spec.url, spec.topic, spec.count, spec.options) }
      break
    case 'latency':
      result = await latency(spec.side, spec.url, spec.rate, spec.seconds, spec.retrySafe ?? true)
      break
    case 'delayed':
      result = await delayed(spec.url, spec.count, spec.delayMs, spec.seconds)
      break
  }
  const cpu = process.cpuUsage(cpuBefore)
  const cpuMs = (cpu.user + cpu.system) / 1_000
  const mainAfter = mainThreadCpuMs()
  const mainCpuMs = mainBefore === undefined || mainAfter === undefined ? undefined : mainAfter - mainBefore
  if (session !== undefined && profileFile !== undefined) {
    const { profile } = await session.post('Profiler.stop')
    writeFileSync(profileFile, JSON.stringify(profile))
    session.disconnect()
  }
  // maxRSS is in KiB.
  const out: ChildResult = { ...result, maxRssMiB: process.resourceUsage().maxRSS / 1024, baselineMiB, cpuMs, ...(mainCpuMs === undefined ? {} : { mainCpuMs }) }
  console.log(JSON.stringify(out))
}

await main()
