/**
 * Vitest globalSetup of the `integration` project: provides `redisUrl` to every
 * test file (read it with `redisUrl()` from `./redis.js`).
 *
 * Order: `EVENT_REDIS_URL` when set; else a private `redis-server` from `PATH`
 * on a free loopback port; else a `redis:7.2.5` container when a container
 * runtime answers; else one clear error.
 */
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

export default async function setup(project: TestProject): Promise<Teardown | undefined> {
  const fromEnv = process.env['EVENT_REDIS_URL']
  if (fromEnv !== undefined && fromEnv.length > 0) {
    project.provide('redisUrl', fromEnv)
    return undefined
  }

  if (findOnPath('redis-server') !== undefined) {
    const server = await startRedisServer()
    project.provide('redisUrl', server.url)
    return () => server.stop()
  }

  const container = await startContainer()
  if (container !== undefined) {
    project.provide('redisUrl', container.url)
    return container.teardown
  }

  throw new Error(
    'Integration tests need Redis: set EVENT_REDIS_URL=redis://host:port, install redis-server (apt-get install -y redis-server), or start Docker so a redis:7.2.5 container can be used.',
  )
}
