/**
 * CPU-profiles one benchmark scenario (only the measured part, not the
 * start-up) on a private redis-server and prints the top frames by self time,
 * and self time per package/file:
 *
 *   npx tsx bench/profile.ts drain [count] [side]       # consume().pipe(handleEach), c=100, batch 100, payload read
 *   npx tsx bench/profile.ts drain-lazy [count] [side]  # the same, payload never read
 *   npx tsx bench/profile.ts subscribe [count]          # events.subscribe(), default batch 10, c=10
 *   npx tsx bench/profile.ts publish [count] [side]     # 1,000 concurrent publish()
 *   npx tsx bench/profile.ts batch [count] [side]       # publishBatch of 100
 *   npx tsx bench/profile.ts top <file.cpuprofile>      # summarise an existing profile
 *
 * `side` is `library` (default), `raw1` or `raw5`. The profile is kept in
 * `$BENCH_PROFILE_DIR` (default: the system temp directory).
 */
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { startRedisServer } from '../test/support/redis-server.js'
import type { ChildSpec } from './child.js'
import { runChild } from './harness.js'
import { formatOf, prefill, randomTopic, type DrainOptions, type Side } from './scenarios.js'

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
}
interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly children?: readonly number[]
}
interface CpuProfile {
  readonly nodes: readonly ProfileNode[]
  readonly samples: readonly number[]
  readonly timeDeltas: readonly number[]
}

const ROOT = new URL('..', import.meta.url).pathname

/** Where a frame lives: a package name for node_modules, a repo-relative path for ours, or a V8 pseudo-frame. */
function placeOf(url: string): string {
  if (url === '') return '(native/V8)'
  const path = url.replace(/^file:\/\//, '')
  const nm = path.lastIndexOf('/node_modules/')
  if (nm >= 0) {
    const rest = path.slice(nm + '/node_modules/'.length).split('/')
    return rest[0]?.startsWith('@') === true ? `${rest[0]}/${rest[1] ?? ''}` : (rest[0] ?? path)
  }
  if (path.startsWith('node:')) return path
  return path.startsWith(ROOT) ? relative(ROOT, path) : path
}

/** A frame's function and place (TS files run through tsx report line 1 for everything: no line for them). */
function frameName(frame: CallFrame): string {
  const place = placeOf(frame.url)
  const line = frame.url === '' || frame.url.endsWith('.ts') ? '' : `:${String(frame.lineNumber + 1)}`
  return `${frame.functionName === '' ? '(anonymous)' : frame.functionName}  ${place}${line}`
}

/** Prints the `limit` frames with the most self time, and self time per package or file. */
export function summarise(file: string, limit = 25): void {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const self = new Map<number, number>()
  let total = 0
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0
    self.set(id, (self.get(id) ?? 0) + dt)
    total += dt
  })
  const frames = new Map<string, number>()
  const places = new Map<string, number>()
  for (const [id, us] of self) {
    const frame = byId.get(id)?.callFrame
    if (frame === undefined) continue
    const place = placeOf(frame.url)
    const name = frameName(frame)
    frames.set(name, (frames.get(name) ?? 0) + us)
    places.set(place, (places.get(place) ?? 0) + us)
  }
  const pct = (us: number): string => `${((100 * us) / total).toFixed(1).padStart(5)} %`
  console.log(`profile ${file}: ${(total / 1e6).toFixed(2)} s sampled`)
  console.log('\ntop frames by self time:')
  for (const [name, us] of [...frames].sort((a, b) => b[1] - a[1]).slice(0, limit)) console.log(`  ${pct(us)}  ${(us / 1e3).toFixed(0).padStart(6)} ms  ${name}`)
  // Who calls the heaviest frames: the caller chains (3 deep) that account for their self time.
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  console.log('\ncallers of the top 8 frames (3 levels up):')
  for (const [name] of [...frames].sort((a, b) => b[1] - a[1]).filter(([n]) => !n.startsWith('(idle)') && !n.startsWith('(garbage') && !n.startsWith('(program)')).slice(0, 8)) {
    const chains = new Map<string, number>()
    for (const [id, us] of self) {
      const frame = byId.get(id)?.callFrame
      if (frame === undefined || frameName(frame) !== name) continue
      const chain: string[] = []
      for (let p = parent.get(id); p !== undefined && chain.length < 3; p = parent.get(p)) {
        const f = byId.get(p)?.callFrame
        if (f !== undefined) chain.push(frameName(f).replace(/\s+/g, ' '))
      }
      const key = chain.join(' < ')
      chains.set(key, (chains.get(key) ?? 0) + us)
    }
    console.log(`  ${name.replace(/\s+/g, ' ')}`)
    for (const [chain, us] of [...chains].sort((a, b) => b[1] - a[1]).slice(0, 3)) console.log(`      ${pct(us)}  < ${chain}`)
  }
  // Inclusive time: each sample counts once for every distinct frame on its stack.
  const inclusive = new Map<string, number>()
  for (const [id, us] of self) {
    const seen = new Set<string>()
    for (let p: number | undefined = id; p !== undefined; p = parent.get(p)) {
      const f = byId.get(p)?.callFrame
      if (f !== undefined) seen.add(frameName(f))
    }
    for (const name of seen) inclusive.set(name, (inclusive.get(name) ?? 0) + us)
  }
  console.log('\ntop frames by total (inclusive) time, ours and the client:')
  const interesting = [...inclusive].filter(([name]) => !/^\((root|program|idle|garbage collector)\)/.test(name) && !/node:internal|node:net|node:events|processTicksAndRejections|runMicrotasks/.test(name))
  for (const [name, us] of interesting.sort((a, b) => b[1] - a[1]).slice(0, limit)) console.log(`  ${pct(us)}  ${(us / 1e3).toFixed(0).padStart(6)} ms  ${name}`)
  console.log('\nself time by package / file:')
  for (const [place, us] of [...places].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`  ${pct(us)}  ${place}`)
}

async function profileScenario(kind: string, count: number, side: Side): Promise<void> {
  const server = await startRedisServer()
  const out = join(process.env['BENCH_PROFILE_DIR'] ?? tmpdir(), `rrs-${kind}-${side}-${String(Date.now())}.cpuprofile`)
  try {
    let spec: ChildSpec
    const url = server.url
    if (kind === 'drain' || kind === 'drain-lazy' || kind === 'subscribe') {
      const topic = randomTopic('prof')
      await prefill(url, topic, count, formatOf(side))
      const options: DrainOptions =
        kind === 'subscribe' ? { concurrency: 10, readPayload: true, viaSubscribe: true } : { batchSize: 100, concurrency: 100, readPayload: kind === 'drain' }
      spec = { kind: 'drain', side, url, topic, count, options }
    } else if (kind === 'publish') {
      spec = { kind: 'publish', side, url, count, concurrency: 1_000 }
    } else if (kind === 'batch') {
      spec = { kind: 'batch', side, url, count, size: 100 }
    } else {
      throw new Error(`unknown scenario ${kind}`)
    }
    const result = await runChild(spec, { BENCH_CPU_PROFILE: out })
    console.log(`${kind} (${side}, ${String(count)}): ${Math.round(result.rate ?? 0).toLocaleString('en-US')} msg/s, peak RSS ${result.maxRssMiB.toFixed(0)} MiB`)
  } finally {
    await server.stop()
  }
  summarise(out)
}

const [verb = 'drain', a, b] = process.argv.slice(2)
if (verb === 'top') {
  if (a === undefined) throw new Error('usage: profile.ts top <file.cpuprofile>')
  summarise(a, Number(b ?? '25'))
} else {
  await profileScenario(verb, Number(a ?? '100000'), (b ?? 'library') as Side)
}
