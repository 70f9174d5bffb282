/**
 * Vitest globalSetup of the `integration` project: provides `redisUrls` to every
 * test file (read the one of its worker with `redisUrl()` from `./redis.js`).
 *
 * Order: `EVENT_REDIS_URL` when set; else private `redis-server`s from `PATH`
 * on free loopback ports, one per worker, so that files running at the same
 * time never share a server (a test that reads server-wide counters such as
 * `total_net_input_bytes` sees only its own file's traffic, as in a serial run);
 * else a `redis:7.2.5` container when a container runtime answers; else one
 * clear error. `EVENT_REDIS_URL` and the container are one server for every
 * worker: run with `--maxWorkers 1` when that matters.
 */
import { availableParallelism } from 'node:os'
import type { TestProject } from 'vitest/node'
import type {} from './redis.js' // the `ProvidedContext` declaration
import { findOnPath, startRedisServer } from './redis-server.js'

const REDIS_IMAGE = 'redis:7.2.5'

type Teardown = () => Promise<void>

async function startContainer(): Promise<{ url: string; teardown: Teardown } | undefined> {
  const { getContainerRuntimeClient } = await import('testcontainers')
  try {
    await getContainerRuntimeClient()
  } catch {
    return undefined
  }
  const { RedisContainer } = await import('@testcontainers/redis')
  const container = await new RedisContainer(REDIS_IMAGE).start()
  return {
    url: container.getConnectionUrl(),
    teardown: async () => {
      await container.stop()
    },
  }
}

/** How many workers run this project's files at once (`VITEST_POOL_ID` is 1 to this). */
function workerCount(project: TestProject): number {
  // The project's own setting is unset unless the project gives one (its type says otherwise), like vitest's.
  const configured = (project.config as { maxWorkers?: number }).maxWorkers ?? project.vitest.config.maxWorkers
  return typeof configured === 'number' && configured >= 1 ? Math.floor(configured) : Math.max(availableParallelism() - 1, 1)
}

export default async function setup(project: TestProject): Promise<Teardown | undefined> {
  const fromEnv = process.env['EVENT_REDIS_URL']
  if (fromEnv !== undefined && fromEnv.length > 0) {
    project.provide('redisUrls', [fromEnv])
    return undefined
  }

  if (findOnPath('redis-server') !== undefined) {
    const servers = await Promise.all(Array.from({ length: workerCount(project) }, () => startRedisServer()))
    project.provide('redisUrls', servers.map((s) => s.url))
    return async () => {
      await Promise.all(servers.map((s) => s.stop()))
    }
  }

  const container = await startContainer()
  if (container !== undefined) {
    project.provide('redisUrls', [container.url])
    return container.teardown
  }

  throw new Error(
    'Integration tests need Redis: set EVENT_REDIS_URL=redis://host:port, install redis-server (apt-get install -y redis-server), or start Docker so a redis:7.2.5 container can be used.',
  )
}
