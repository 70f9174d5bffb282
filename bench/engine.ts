/**
 * The engine's own CPU per message, without Redis: a backlog in the memory
 * backend drained through `consume().pipe(handleEach)` (batch 100, c=100) or
 * `subscribe()` (batch 10, c=10), payload read. Less noisy than the Redis
 * benches on a busy machine (no socket, no second process); it shows what the
 * subscription, the message and handleEach cost per message.
 *
 *   BENCH_DIST=1 npx tsx bench/engine.ts [drain|subscribe] [count] [runs]
 *   ENGINE_ROOT=/path/to/other/checkout npx tsx bench/engine.ts drain   # that checkout's dist/
 */
import { filter, firstValueFrom, scan } from 'rxjs'

const [kind = 'drain', countText = '100000', runsText = '5'] = process.argv.slice(2)
const count = Number(countText)
const runs = Number(runsText)
// ENGINE_ROOT: another checkout's build (A/B), e.g. ENGINE_ROOT=/work/wt-base.
const root = process.env['ENGINE_ROOT'] === undefined ? '..' : `file://${process.env['ENGINE_ROOT']}`
const base = process.env['BENCH_DIST'] === '1' || process.env['ENGINE_ROOT'] !== undefined ? `${root}/dist/` : '../'
const lib = (await import(`${base}src/index.js`)) as typeof import('../src/index.js')
const ops = (await import(`${base}operators/index.js`)) as typeof import('../operators/index.js')

async function once(): Promise<{ rate: number; cpu: number }> {
  const events = lib.createEventManager({ backend: 'memory', env: {} })
  const topic = `engine-${String(Math.random()).slice(2)}`
  for (let i = 0; i < count; i += 500) {
    await events.publishBatch(topic, Array.from({ length: Math.min(500, count - i) }, (_, j) => lib.newEvent('bench.entry', { n: i + j, text: 'x'.repeat(120) })))
  }
  const handler = (msg: { event: { payload: unknown } }): void => {
    if (msg.event.payload === undefined) throw new Error('no payload')
  }
  const started = performance.now()
  const cpu0 = process.cpuUsage()
  if (kind === 'subscribe') {
    let handled = 0
    let done: () => void = () => undefined
    const finished = new Promise<void>((resolve) => (done = resolve))
    const sub = events.subscribe(topic, 'g', handler, { concurrency: 10, onSettled: () => {
        if (++handled === count) done()
      } })
    await finished
    await sub.unsubscribe()
  } else {
    await firstValueFrom(
      events.topic(topic).consume({ group: 'g', batchSize: 100 }).pipe(
        ops.handleEach(handler, { concurrency: 100 }),
        scan((n) => n + 1, 0),
        filter((n) => n === count),
      ),
    )
  }
  const cpu = process.cpuUsage(cpu0)
  const rate = (count / (performance.now() - started)) * 1_000
  await events.close()
  return { rate, cpu: (cpu.user + cpu.system) / count }
}

const results: { rate: number; cpu: number }[] = []
for (let i = 0; i < runs; i++) {
  const r = await once()
  results.push(r)
  console.log(`  run ${String(i + 1)}: ${Math.round(r.rate).toLocaleString('en-US')} msg/s, ${r.cpu.toFixed(2)} µs/msg`)
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0
console.log(`${kind}: median ${Math.round(median(results.map((r) => r.rate))).toLocaleString('en-US')} msg/s, ${median(results.map((r) => r.cpu)).toFixed(2)} µs/msg, min ${Math.min(...results.map((r) => r.cpu)).toFixed(2)} µs/msg`)
