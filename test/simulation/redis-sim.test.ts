/**
 * The simulation's smaller randomized run against a real redis-server (issue
 * #11): the same scenario generator (fewer events and steps, real time,
 * bounded), a private redis-server, and a fault-injecting TCP proxy between
 * the simulated processes and the server (executed-but-reply-lost, resets).
 * Fixed seeds, like the memory run; replay one with
 * `REDIS_SIM_SEEDS=S npx vitest run test/simulation/redis-sim.test.ts`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { runScenario } from './harness.js'
import { redisWorld, startFaultProxy } from './redis-world.js'
import { generateScenario } from './scenario.js'
import type { FaultProxy } from '../support/fault-proxy.js'

const SEEDS = (process.env['REDIS_SIM_SEEDS'] ?? '1,2,3,4,5,6,7,8').split(',').map(Number)

let server: RedisServer
let proxy: FaultProxy

beforeAll(async () => {
  server = await startRedisServer()
  proxy = await startFaultProxy({ host: server.host, port: server.port })
})

afterAll(async () => {
  await proxy.close()
  await server.stop()
})

describe('simulation on a real redis-server through a faulty proxy', () => {
  for (const seed of SEEDS) {
    it(`holds every invariant for seed ${seed}`, { timeout: 150_000 }, async () => {
      const scenario = generateScenario(seed, { size: 'redis' })
      const world = await redisWorld({ redisUrl: server.url, proxy, seed, topic: `sim-redis-${seed}-${Date.now()}` })
      try {
        const result = await runScenario(scenario, { world })
        expect(result.violations, `seed ${seed} on Redis:\n  ${result.violations.join('\n  ')}\n  last trace:\n  ${result.trace.slice(-40).join('\n  ')}`).toEqual([])
        expect(result.handlerRuns).toBeGreaterThan(0)
      } finally {
        await world.close()
      }
    })
  }
})
