/**
 * The cost of retry-safe publishing (EVENT_PUBLISH_DEDUPE_WINDOW): publish
 * throughput with the dedupe window on (the default, one script per publish
 * that also writes a per-id key with PX) against the same publishes with it
 * off (one plain XADD), in one run, on a private redis-server this script
 * starts. Rounds alternate on/off; figures are medians. Also prints the Redis
 * memory a dedupe key costs.
 *
 *   npx tsx bench/publish-dedupe.ts
 *   DEDUPE_N=50000 DEDUPE_ROUNDS=5 DEDUPE_INFLIGHT=200 npx tsx bench/publish-dedupe.ts
 */
import { Redis } from 'ioredis'
import { createEventManager, newEvent, type EventManager } from '../src/index.js'
import { startRedisServer } from '../test/support/redis-server.js'

const N = Number(process.env['DEDUPE_N'] ?? '20000')
const ROUNDS = Math.max(1, Number(process.env['DEDUPE_ROUNDS'] ?? '3'))
const IN_FLIGHT = Number(process.env['DEDUPE_INFLIGHT'] ?? '100')

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] ?? Number.NaN
}

/** Publishes N events, IN_FLIGHT at a time; returns events per second. */
async function publishRate(events: EventManager, topic: string, mode: 'one' | 'batch'): Promise<number> {
  const started = performance.now()
  if (mode === 'batch') {
    for (let i = 0; i < N; i += 100) await events.publishBatch(topic, Array.from({ length: Math.min(100, N - i) }, (_, j) => newEvent('bench.event', { i: i + j, text: 'hello' })))
  } else {
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < N) {
        const i = next++
        await events.publish(topic, newEvent('bench.event', { i, text: 'hello' }))
      }
    }
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker))
  }
  return N / ((performance.now() - started) / 1_000)
}

const server = await startRedisServer()
const direct = new Redis(server.url)
try {
  const on = createEventManager({ redisUrl: server.url, env: {}, delayedQueueEnabled: false })
  const off = createEventManager({ redisUrl: server.url, env: {}, delayedQueueEnabled: false, publishDedupeWindow: 0 })
  for (const mode of ['one', 'batch'] as const) {
    const rates: Record<'on' | 'off', number[]> = { on: [], off: [] }
    // Warm-up: connections, scripts, JIT.
    await publishRate(on, `warm-on-${mode}`, mode)
    await publishRate(off, `warm-off-${mode}`, mode)
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)
      for (const side of order) {
        await direct.flushall()
        rates[side].push(await publishRate(side === 'on' ? on : off, `bench-${side}-${String(round)}`, mode))
      }
    }
    const mOn = median(rates.on)
    const mOff = median(rates.off)
    const label = mode === 'one' ? `publish() x${String(N)}, ${String(IN_FLIGHT)} in flight` : `publishBatch() of 100 x${String(N / 100)}`
    console.log(`${label}: dedupe off ${Math.round(mOff).toLocaleString('en-US')}/s, on ${Math.round(mOn).toLocaleString('en-US')}/s, on/off = ${(mOn / mOff).toFixed(2)}`)
  }

  // Memory: one key per event id for the window.
  await direct.flushall()
  const topic = 'orders'
  const before = Number(/used_memory:(\d+)/.exec(await direct.info('memory'))?.[1])
  const count = 10_000
  for (let i = 0; i < count; i += 100) await on.publishBatch(topic, Array.from({ length: 100 }, () => newEvent('bench.event', {})))
  const withKeys = Number(/used_memory:(\d+)/.exec(await direct.info('memory'))?.[1])
  const keys = await direct.keys('event:published:*')
  const sample = keys[0] === undefined ? null : await direct.memory('USAGE', keys[0])
  const streamBytes = await direct.memory('USAGE', `event:stream:{${topic}}`)
  const keyBytes = (withKeys - before - Number(streamBytes)) / count
  console.log(`dedupe keys: ${String(keys.length)} for ${String(count)} events; MEMORY USAGE of one key ${String(sample)} B; used_memory per event id beyond the stream ≈ ${keyBytes.toFixed(0)} B`)
  console.log(`per topic at R events/s, the window W holds R × W keys: e.g. 1,000/s × 5 min = 300,000 keys ≈ ${((300_000 * keyBytes) / 2 ** 20).toFixed(0)} MiB`)
  await on.close()
  await off.close()
} finally {
  await direct.quit()
  await server.stop()
}
