/**
 * Benchmarks rx-redis-streams against the same work hand-written with raw
 * ioredis, in one run, on a private redis-server this script starts (never
 * the one on 6379). Two raw programs are measured (see scenarios.ts): the
 * hand-written one-field loop (`raw1`, the yardstick of the goals) and a raw
 * loop over the library's own five-field entries (`raw5`). Every measurement
 * is a fresh process; the sides of a row alternate run by run (interleaved)
 * and each figure is the median of the runs.
 *
 *   npm run bench                           # full sizes, 3 runs
 *   BENCH_SCALE=0.1 npm run bench           # a quick look
 *   BENCH_DIST=1 npm run bench              # the built package (npm run build first)
 *   BENCH_RUNS=5 BENCH_ONLY=drain,rss npm run bench
 *
 * Sections (BENCH_ONLY): drain, publish, batch, latency, delayed, rss. The library
 * rows write (and drain a prefill in) the layout a user gets, the default
 * compact one (`meta` + `payload`); the drain, publish and batch sections
 * also measure the five-field layout (EVENT_WIRE_FORMAT=fields, `-fields`
 * rows), the one a deployment keeps while older consumers still read it.
 * BENCH_WIRE_FORMAT=fields|compact sets the layout of the default library
 * rows; the `-fields` rows are always five fields.
 */
import { startRedisServer } from '../test/support/redis-server.js'
import type { ChildResult, ChildSpec } from './child.js'
import { median, rotate, runChild } from './harness.js'
import { formatOf, libraryFormat, prefill, randomTopic, rawClient, type DrainOptions, type Side, type WireFormat } from './scenarios.js'

const scale = Number(process.env['BENCH_SCALE'] ?? '1')
const runs = Math.max(1, Number(process.env['BENCH_RUNS'] ?? '3'))
const only = new Set((process.env['BENCH_ONLY'] ?? 'drain,publish,batch,latency,delayed,rss').split(',').map((s) => s.trim()))
const n = (count: number): number => Math.max(1_000, Math.round(count * scale))
const fmt = (x: number): string => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a')
const ms = (x: number | undefined): string => (x === undefined ? 'n/a' : x.toFixed(2))

/** One measured variant: a side with its spec maker. */
interface Variant {
  readonly label: string
  readonly side: Side
  /** Builds the spec; drains get a freshly filled topic. */
  readonly spec: (url: string, topic: string) => ChildSpec
  /** Entries to prefill before the child starts (drains). */
  readonly prefill?: number
  /** Messages the scenario handles (for CPU time per message). */
  readonly messages?: number
  /** Variables for the child only (BENCH_WIRE_FORMAT=fields), and the layout the prefill writes then. */
  readonly env?: Readonly<Record<string, string>>
  readonly format?: WireFormat
}

/** The library side in the five-field layout (EVENT_WIRE_FORMAT=fields). */
const FIELDS = { env: { BENCH_WIRE_FORMAT: 'fields' }, format: 'five-field' } as const
/** The layout of the default library rows (the library's default unless BENCH_WIRE_FORMAT says otherwise). */
const LAYOUT = libraryFormat()

const server = await startRedisServer()
const admin = rawClient(server.url, false)
/** A child's result, with the CPU time the redis-server spent meanwhile (ms; its threads, from INFO cpu). */
type Measured = ChildResult & { readonly redisCpuMs: number }
const results = new Map<string, Measured[]>()

/** The redis-server's CPU time so far (user + system of all its threads), ms. */
async function redisCpuMs(): Promise<number> {
  const info = await admin.info('cpu')
  const field = (name: string): number => Number(new RegExp(`^${name}:([0-9.]+)`, 'm').exec(info)?.[1] ?? NaN)
  return (field('used_cpu_user') + field('used_cpu_sys')) * 1_000
}
const messages = new Map<string, number>()

/** Runs every variant `runs` times, interleaved; each measurement on an emptied server. */
async function measure(section: string, variants: readonly Variant[]): Promise<void> {
  for (let run = 0; run < runs; run++) {
    for (const v of rotate(variants, run)) {
      await admin.flushall()
      const topic = randomTopic(v.label)
      if (v.prefill !== undefined) await prefill(server.url, topic, v.prefill, v.format ?? formatOf(v.side))
      const redisBefore = await redisCpuMs()
      const result: Measured = { ...(await runChild(v.spec(server.url, topic), v.env ?? {})), redisCpuMs: (await redisCpuMs()) - redisBefore }
      if (v.messages !== undefined) messages.set(v.label, v.messages)
      const list = results.get(v.label) ?? []
      list.push(result)
      results.set(v.label, list)
      const shown = result.rate !== undefined ? `${fmt(result.rate)} msg/s` : `p50 ${ms(result.p50)} ms, p99 ${ms(result.p99)} ms`
      const cpu = v.messages === undefined ? '' : `, CPU ${((result.cpuMs * 1_000) / v.messages).toFixed(1)} µs/msg`
      console.log(`  [${section} run ${run + 1}/${runs}] ${v.label}: ${shown}${cpu}, peak RSS ${result.maxRssMiB.toFixed(0)} MiB`)
    }
  }
  await admin.flushall()
}

const med = (label: string, pick: (r: Measured) => number | undefined): number =>
  median((results.get(label) ?? []).map(pick).filter((x): x is number => x !== undefined))
const rate = (label: string): number => med(label, (r) => r.rate)
const rss = (label: string): number => med(label, (r) => r.maxRssMiB)

console.log(`private redis-server at ${server.url} (scale ${scale}, ${runs} interleaved runs, a fresh process per measurement; library rows: ${LAYOUT} layout)`)
const drainCount = n(100_000)
const rssCounts = { big: n(1_000_000), small: n(100_000) }
const latencySeconds = Math.max(2, Math.round(5 * scale))
try {
  if (only.has('drain')) {
    const drainSpec =
      (side: Side, options: DrainOptions) =>
      (url: string, topic: string): ChildSpec => ({ kind: 'drain', side, url, topic, count: drainCount, options })
    const libRead: DrainOptions = { batchSize: 100, concurrency: 100, readPayload: true }
    await measure('drain', [
      { label: 'drain-raw1', side: 'raw1', prefill: drainCount, messages: drainCount, spec: drainSpec('raw1', { batchSize: 100, concurrency: 1, readPayload: true }) },
      { label: 'drain-lib-read', side: 'library', prefill: drainCount, messages: drainCount, spec: drainSpec('library', libRead) },
      { label: 'drain-raw5', side: 'raw5', prefill: drainCount, messages: drainCount, spec: drainSpec('raw5', { batchSize: 100, concurrency: 1, readPayload: true }) },
      { label: 'drain-lib-lazy', side: 'library', prefill: drainCount, messages: drainCount, spec: drainSpec('library', { ...libRead, readPayload: false }) },
      // events.subscribe() with the Config's default batch size (EVENT_BATCH_SIZE=10) and concurrency 10; the handler reads the payload.
      { label: 'drain-lib-subscribe', side: 'library', prefill: drainCount, messages: drainCount, spec: drainSpec('library', { concurrency: 10, readPayload: true, viaSubscribe: true }) },
      { label: 'drain-lib-read-fields', side: 'library', prefill: drainCount, messages: drainCount, spec: drainSpec('library', libRead), ...FIELDS },
    ])
  }
  if (only.has('publish')) {
    const count = n(100_000)
    const spec = (side: Side, retrySafe = true) => (url: string): ChildSpec => ({ kind: 'publish', side, url, count, concurrency: 1_000, retrySafe })
    await measure('publish', [
      ...(['raw1', 'library', 'raw5'] as const).map((side) => ({ label: `publish-${side}`, side, messages: count, spec: spec(side) })),
      { label: 'publish-library-unsafe', side: 'library', messages: count, spec: spec('library', false) },
      { label: 'publish-library-fields', side: 'library', messages: count, spec: spec('library'), ...FIELDS },
    ])
  }
  if (only.has('batch')) {
    const count = n(100_000)
    const spec = (side: Side, retrySafe = true) => (url: string): ChildSpec => ({ kind: 'batch', side, url, count, size: 100, retrySafe })
    await measure('batch', [
      ...(['raw1', 'library', 'raw5'] as const).map((side) => ({ label: `batch-${side}`, side, messages: count, spec: spec(side) })),
      { label: 'batch-library-unsafe', side: 'library', messages: count, spec: spec('library', false) },
      { label: 'batch-library-fields', side: 'library', messages: count, spec: spec('library'), ...FIELDS },
    ])
  }
  if (only.has('latency')) {
    const spec = (side: Side, retrySafe = true) => (url: string): ChildSpec => ({ kind: 'latency', side, url, rate: 5_000, seconds: latencySeconds, retrySafe })
    await measure('latency', [
      ...(['raw1', 'library', 'raw5'] as const).map((side) => ({ label: `latency-${side}`, side, spec: spec(side) })),
      { label: 'latency-library-unsafe', side: 'library', spec: spec('library', false) },
    ])
  }
  if (only.has('delayed')) {
    // 1,000 events (scaled) delayed 1 s, published over 2 s; the library alone (no hand-written delayed queue).
    const count = Math.max(200, Math.round(1_000 * scale))
    await measure('delayed', [{ label: 'delayed-library', side: 'library', spec: (url) => ({ kind: 'delayed', side: 'library', url, count, delayMs: 1_000, seconds: 2 }) }])
  }
  if (only.has('rss')) {
    const variants: Variant[] = []
    for (const [size, count] of Object.entries(rssCounts)) {
      for (const side of ['raw1', 'library', 'raw5'] as const) {
        if (side === 'raw5' && size === 'small') continue
        const options: DrainOptions = { batchSize: 100, concurrency: side === 'library' ? 100 : 1, readPayload: true }
        variants.push({ label: `rss-${size}-${side}`, side, prefill: count, messages: count, spec: (url, topic) => ({ kind: 'drain', side, url, topic, count, options }) })
      }
    }
    await measure('rss', variants)
  }
} finally {
  await admin.quit()
  await server.stop()
}

// ---------------------------------------------------------------- report

interface Row {
  readonly work: string
  readonly raw1: string
  readonly library: string
  readonly ratio: string
  readonly goal: string
  readonly met: string
  readonly raw5: string
  readonly ratio5: string
}
const rows: Row[] = []
/** The throughput rows with a goal, for the table of each round's ratio. */
const goals: { readonly work: string; readonly libLabel: string; readonly raw1Label: string; readonly goal: number }[] = []
const check = (ok: boolean): string => (ok ? 'yes' : 'NO')

/** `goal` undefined: a row the issue sets no goal for (the five-field layout, kept while older consumers read it). */
function throughputRow(work: string, libLabel: string, raw1Label: string, raw5Label: string, goal: number | undefined): void {
  if (!results.has(libLabel)) return
  if (goal !== undefined) goals.push({ work, libLabel, raw1Label, goal })
  const lib = rate(libLabel)
  const r1 = rate(raw1Label)
  const r5 = rate(raw5Label)
  rows.push({
    work,
    raw1: `${fmt(r1)}/s`,
    library: `${fmt(lib)}/s`,
    ratio: (lib / r1).toFixed(2),
    goal: goal === undefined ? '' : `≥ ${goal.toFixed(2)}`,
    met: goal === undefined ? '' : check(lib / r1 >= goal),
    raw5: `${fmt(r5)}/s`,
    ratio5: (lib / r5).toFixed(2),
  })
}

throughputRow(`drain, payload read (handleEach c=100, batchSize 100), ${LAYOUT} layout`, 'drain-lib-read', 'drain-raw1', 'drain-raw5', 1.0)
throughputRow('drain, payload never read (lazy decoding)', 'drain-lib-lazy', 'drain-raw1', 'drain-raw5', 1.2)
throughputRow('subscribe(), default batch 10, concurrency 10, payload read', 'drain-lib-subscribe', 'drain-raw1', 'drain-raw5', 0.8)
throughputRow('drain, payload read, five-field layout (EVENT_WIRE_FORMAT=fields)', 'drain-lib-read-fields', 'drain-raw1', 'drain-raw5', undefined)
throughputRow(`publish, 1,000 concurrent (raw: autopipelined XADD); retry-safe (default), ${LAYOUT} layout`, 'publish-library', 'publish-raw1', 'publish-raw5', 0.95)
throughputRow('the same, dedupe window off (EVENT_PUBLISH_DEDUPE_WINDOW=0)', 'publish-library-unsafe', 'publish-raw1', 'publish-raw5', 0.95)
throughputRow('the same, retry-safe, five-field layout (EVENT_WIRE_FORMAT=fields)', 'publish-library-fields', 'publish-raw1', 'publish-raw5', undefined)
throughputRow(`publishBatch of 100 (raw: pipeline of 100 XADDs); retry-safe (default), ${LAYOUT} layout`, 'batch-library', 'batch-raw1', 'batch-raw5', 1.0)
throughputRow('the same, dedupe window off', 'batch-library-unsafe', 'batch-raw1', 'batch-raw5', 1.0)
throughputRow('the same, retry-safe, five-field layout (EVENT_WIRE_FORMAT=fields)', 'batch-library-fields', 'batch-raw1', 'batch-raw5', undefined)

function latencyRow(work: string, libLabel: string): void {
  if (!results.has(libLabel)) return
  const p = (label: string, q: 'p50' | 'p99'): number => med(label, (r) => r[q])
  const [l50, l99, a50, a99, b50, b99] = [p(libLabel, 'p50'), p(libLabel, 'p99'), p('latency-raw1', 'p50'), p('latency-raw1', 'p99'), p('latency-raw5', 'p50'), p('latency-raw5', 'p99')]
  rows.push({
    work,
    raw1: `${ms(a50)} / ${ms(a99)}`,
    library: `${ms(l50)} / ${ms(l99)}`,
    ratio: `${l50 - a50 >= 0 ? '+' : ''}${(l50 - a50).toFixed(2)} ms / ${(l99 / a99).toFixed(2)}×`,
    goal: '≤ +0.20 ms / ≤ 1.20×',
    met: check(l50 - a50 <= 0.2 && l99 / a99 <= 1.2),
    raw5: `${ms(b50)} / ${ms(b99)}`,
    ratio5: `${l50 - b50 >= 0 ? '+' : ''}${(l50 - b50).toFixed(2)} ms / ${(l99 / b99).toFixed(2)}×`,
  })
}
latencyRow(`end-to-end latency at 5,000/s, p50 / p99 (ms); retry-safe publish (default), ${LAYOUT} layout`, 'latency-library')
latencyRow('the same, dedupe window off (EVENT_PUBLISH_DEDUPE_WINDOW=0)', 'latency-library-unsafe')

if (results.has('delayed-library')) {
  const p50 = med('delayed-library', (r) => r.p50)
  const p99 = med('delayed-library', (r) => r.p99)
  rows.push({ work: 'delayed 1 s (publishWithDelay), lateness after the due time, p50 / p99 (ms)', raw1: '', library: `${ms(p50)} / ${ms(p99)}`, ratio: '', goal: '', met: '', raw5: '', ratio5: '' })
}

if (results.has('rss-big-library')) {
  const lib = rss('rss-big-library')
  const r1 = rss('rss-big-raw1')
  const r5 = rss('rss-big-raw5')
  rows.push({
    work: `peak RSS draining ${fmt(rssCounts.big)} (MiB)`,
    raw1: r1.toFixed(0),
    library: lib.toFixed(0),
    ratio: `${lib - r1 >= 0 ? '+' : ''}${(lib - r1).toFixed(0)} MiB`,
    goal: '≤ +25 MiB',
    met: check(lib - r1 <= 25),
    raw5: r5.toFixed(0),
    ratio5: `${lib - r5 >= 0 ? '+' : ''}${(lib - r5).toFixed(0)} MiB`,
  })
  const libSmall = rss('rss-small-library')
  const r1Small = rss('rss-small-raw1')
  rows.push({
    work: `peak RSS, ${fmt(rssCounts.big)} vs ${fmt(rssCounts.small)} backlog (MiB)`,
    raw1: `${r1.toFixed(0)} vs ${r1Small.toFixed(0)}`,
    library: `${lib.toFixed(0)} vs ${libSmall.toFixed(0)}`,
    ratio: `${lib - libSmall >= 0 ? '+' : ''}${(lib - libSmall).toFixed(0)} MiB`,
    goal: '≤ +10 MiB (flat)',
    met: check(lib - libSmall <= 10),
    raw5: '',
    ratio5: '',
  })
  rows.push({
    work: `drain rate in the RSS runs, ${fmt(rssCounts.big)}`,
    raw1: `${fmt(rate('rss-big-raw1'))}/s`,
    library: `${fmt(rate('rss-big-library'))}/s`,
    ratio: (rate('rss-big-library') / rate('rss-big-raw1')).toFixed(2),
    goal: '',
    met: '',
    raw5: `${fmt(rate('rss-big-raw5'))}/s`,
    ratio5: (rate('rss-big-library') / rate('rss-big-raw5')).toFixed(2),
  })
}

/** The median of one measure of `label`'s runs, per message handled, µs (the measure in ms). */
const perMessage = (label: string, pick: (r: Measured) => number | undefined): number => (med(label, pick) * 1_000) / (messages.get(label) ?? NaN)
const cpuPerMessage = (label: string): number => perMessage(label, (r) => r.cpuMs)
const cpuRows: [string, string, string, string][] = [
  ['drain, payload read', 'drain-lib-read', 'drain-raw1', 'drain-raw5'],
  ['drain, payload never read', 'drain-lib-lazy', 'drain-raw1', 'drain-raw5'],
  ['subscribe(), defaults', 'drain-lib-subscribe', 'drain-raw1', 'drain-raw5'],
  ['drain, payload read, five-field layout', 'drain-lib-read-fields', 'drain-raw1', 'drain-raw5'],
  ['publish, 1,000 concurrent, retry-safe', 'publish-library', 'publish-raw1', 'publish-raw5'],
  ['publish, dedupe off', 'publish-library-unsafe', 'publish-raw1', 'publish-raw5'],
  ['publish, retry-safe, five-field layout', 'publish-library-fields', 'publish-raw1', 'publish-raw5'],
  ['publishBatch of 100, retry-safe', 'batch-library', 'batch-raw1', 'batch-raw5'],
  ['publishBatch of 100, dedupe off', 'batch-library-unsafe', 'batch-raw1', 'batch-raw5'],
  ['publishBatch of 100, retry-safe, five-field layout', 'batch-library-fields', 'batch-raw1', 'batch-raw5'],
]

console.log('')
console.log(`Medians of ${runs} interleaved runs; drains of ${fmt(drainCount)} entries, scale ${scale}. Library rows: the ${LAYOUT} layout unless they say otherwise. raw1 = hand-written one-field loop, raw5 = raw loop over the library's five fields.`)
console.log('')
console.log('| work | hand-written one-field | library | ratio | goal | met | raw, library format | ratio |')
console.log('|---|---|---|---|---|---|---|---|')
for (const r of rows) console.log(`| ${r.work} | ${r.raw1} | ${r.library} | ${r.ratio} | ${r.goal} | ${r.met} | ${r.raw5} | ${r.ratio5} |`)

// The ratio of each round alone (the library's run over the hand-written loop's run of the same round): the machine's
// state drifts between rounds (one quiet-machine session gave 0.97-1.26 for the same row), so the spread is printed.
const perRound = (libLabel: string, rawLabel: string): number[] => {
  const lib = results.get(libLabel) ?? []
  const raw = results.get(rawLabel) ?? []
  const out: number[] = []
  for (let i = 0; i < Math.min(lib.length, raw.length); i++) {
    const l = lib[i]?.rate
    const r = raw[i]?.rate
    if (l !== undefined && r !== undefined) out.push(l / r)
  }
  return out
}
if (goals.length > 0) {
  console.log('')
  console.log('| ratio of each round (library / hand-written, same round) | min | median | max | rounds at or above the goal |')
  console.log('|---|---|---|---|---|')
  for (const { work, libLabel, raw1Label, goal } of goals) {
    const ratios = perRound(libLabel, raw1Label)
    if (ratios.length === 0) continue
    const above = ratios.filter((x) => x >= goal).length
    console.log(`| ${work} | ${Math.min(...ratios).toFixed(2)} | ${median(ratios).toFixed(2)} | ${Math.max(...ratios).toFixed(2)} | ${above} of ${ratios.length} (goal ${goal.toFixed(2)}) |`)
  }
}

// CPU time per message of the client process (Redis excluded): steadier than rates when other work shares the cores.
console.log('')
console.log('| CPU per message (client process) | hand-written one-field | library | library / raw | raw, library format |')
console.log('|---|---|---|---|---|')
for (const [work, lib, r1, r5] of cpuRows) {
  if (!results.has(lib)) continue
  console.log(`| ${work} | ${cpuPerMessage(r1).toFixed(1)} µs | ${cpuPerMessage(lib).toFixed(1)} µs | ${(cpuPerMessage(lib) / cpuPerMessage(r1)).toFixed(2)} | ${cpuPerMessage(r5).toFixed(1)} µs |`)
}

// Where a drain's CPU goes, on both cores: the client's main thread (the JavaScript), its other threads (V8's GC
// helpers and background compiler), and the redis-server. A drain that keeps both cores busy is as fast as the
// busier core allows, whichever process is on it.
const drainLabels: [string, string][] = [
  ['hand-written one-field loop', 'drain-raw1'],
  ['drain, payload read', 'drain-lib-read'],
  ['drain, payload never read', 'drain-lib-lazy'],
  ['subscribe(), defaults', 'drain-lib-subscribe'],
]
if (drainLabels.some(([, label]) => results.get(label)?.some((r) => r.mainCpuMs !== undefined))) {
  console.log('')
  console.log('| drain CPU per message | client main thread | client other threads (GC, compiler) | redis-server | all |')
  console.log('|---|---|---|---|---|')
  for (const [work, label] of drainLabels) {
    if (!results.has(label)) continue
    const main = perMessage(label, (r) => r.mainCpuMs)
    const client = perMessage(label, (r) => r.cpuMs)
    const redis = perMessage(label, (r) => r.redisCpuMs)
    console.log(`| ${work} | ${main.toFixed(1)} µs | ${(client - main).toFixed(1)} µs | ${redis.toFixed(1)} µs | ${(client + redis).toFixed(1)} µs |`)
  }
}
