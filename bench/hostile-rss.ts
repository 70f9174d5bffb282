/**
 * A hostile 64 MiB entry (raw XADD, far over EVENT_MAX_PAYLOAD_BYTES) reaching
 * a consumer that also handles good traffic: the consumer's peak RSS above its
 * baseline, as a multiple of the entry's size (issue 15, item 8: ≤ 3.5×), and
 * the longest gap between two good events while the entry is read and moved to
 * the DLQ. The consumer runs in a child process of its own, so that the
 * writer's buffers are not counted.
 *
 *   npx tsx bench/hostile-rss.ts
 *   HOSTILE_MIB=32 npx tsx bench/hostile-rss.ts
 */
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { createEventManager, newEvent, type Message } from '../src/index.js'
import { startRedisServer } from '../test/support/redis-server.js'

const MIB = Number(process.env['HOSTILE_MIB'] ?? '64')
const TOPIC = 'hostile-rss'
const GROUP = 'rss'

interface ChildReport {
  readonly baselineRss: number
  readonly peakRss: number
  readonly maxGapMs: number
  readonly handled: number
  readonly deadLetters: number
}

async function child(url: string): Promise<void> {
  const events = createEventManager({ redisUrl: url, env: {}, delayedQueueEnabled: false })
  let handled = 0
  let last = performance.now()
  let maxGap = 0
  let peak = 0
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss())
  }, 5)
  const sub = events.topic(TOPIC).consume({ group: GROUP, startFrom: 'beginning' }).subscribe((m: Message) => {
    const now = performance.now()
    if (m.event.name === 'good') {
      if (handled > 0) maxGap = Math.max(maxGap, now - last)
      last = now
      handled++
    }
    void m.ack()
  })
  // Warm up on good traffic, then take the baseline and tell the parent.
  await new Promise((r) => setTimeout(r, 1_500))
  globalThis.gc?.()
  const baselineRss = process.memoryUsage.rss()
  peak = baselineRss
  process.send?.('ready')
  await new Promise<void>((resolve) => process.once('message', () => { resolve() }))
  const report: ChildReport = { baselineRss, peakRss: peak, maxGapMs: maxGap, handled, deadLetters: await events.deadLetters.count(TOPIC) }
  clearInterval(sampler)
  sub.unsubscribe()
  await events.close()
  process.send?.(report)
  process.exit(0)
}

async function main(): Promise<void> {
  const server = await startRedisServer({ extraArgs: ['--proto-max-bulk-len', '1gb', '--client-query-buffer-limit', '1gb'] })
  const redis = new Redis(server.url)
  const publisher = createEventManager({ redisUrl: server.url, env: {}, delayedQueueEnabled: false })
  try {
    await publisher.backend.ensureGroup(TOPIC, GROUP, 'beginning')
    const traffic = { running: true }
    let n = 0
    const goodTraffic = (async () => {
      while (traffic.running) {
        await publisher.publish(TOPIC, newEvent('good', { n: n++ }))
        await new Promise((r) => setTimeout(r, 2))
      }
    })()
    const worker = fork(fileURLToPath(import.meta.url), ['child', server.url], { execArgv: ['--import', 'tsx', '--expose-gc'] })
    await new Promise<void>((resolve) => worker.once('message', () => { resolve() }))
    const size = MIB * 1024 * 1024
    const payload = Buffer.alloc(size, 0x61)
    payload[0] = 0x22
    payload[size - 1] = 0x22
    await redis.xadd(`event:stream:{${TOPIC}}`, '*', 'id', 'hostile', 'name', 'hostile', 'ts', String(Date.now()), 'headers', '{}', 'payload', payload)
    const dlq = `event:dlq:{${TOPIC}}`
    for (let i = 0; i < 600 && (await redis.xlen(dlq)) === 0; i++) await new Promise((r) => setTimeout(r, 50))
    await new Promise((r) => setTimeout(r, 1_000)) // good traffic after the move
    const report = await new Promise<ChildReport>((resolve) => {
      worker.on('message', (m) => { if (typeof m === 'object') resolve(m as ChildReport) })
      worker.send('report')
    })
    traffic.running = false
    await goodTraffic
    const grown = report.peakRss - report.baselineRss
    console.log(`hostile entry: ${String(MIB)} MiB payload; dead letters ${String(report.deadLetters)}; good events handled ${String(report.handled)}`)
    console.log(`consumer RSS: baseline ${(report.baselineRss / 2 ** 20).toFixed(0)} MiB, peak ${(report.peakRss / 2 ** 20).toFixed(0)} MiB, growth ${(grown / 2 ** 20).toFixed(0)} MiB = ${(grown / size).toFixed(2)}× the entry`)
    console.log(`longest gap between two good events: ${report.maxGapMs.toFixed(0)} ms`)
  } finally {
    await publisher.close()
    await redis.quit()
    await server.stop()
  }
}

if (process.argv[2] === 'child') await child(process.argv[3] ?? '')
else await main()
