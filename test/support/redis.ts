/**
 * Test helpers around the Redis the harness provides (see `global-setup.ts`).
 */
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { inject } from 'vitest'

declare module 'vitest' {
  export interface ProvidedContext {
    /** The URLs of the Redis servers the integration tests share, one per worker (never assume port 6379). */
    redisUrls: readonly string[]
  }
}

/**
 * The URL of the shared test Redis: the one of this worker, so that files
 * running at the same time in other workers never use the same server.
 *
 * @example
 * ```ts
 * const config = loadConfig({ redisUrl: redisUrl() })
 * ```
 */
export function redisUrl(): string {
  const urls = inject('redisUrls')
  const worker = Number(process.env['VITEST_POOL_ID'] ?? '1')
  const url = urls[(Number.isInteger(worker) && worker >= 1 ? worker - 1 : 0) % urls.length]
  if (url === undefined) throw new Error('the integration globalSetup provided no Redis URL')
  return url
}

/**
 * A fresh random name made of letters, digits and dashes, valid as a topic,
 * group or consumer name: `${prefix}-<16 hex digits>`.
 *
 * @example
 * ```ts
 * const topic = randomName('orders') // 'orders-3f9c0a7b12de4c55'
 * ```
 */
export function randomName(prefix = 'test'): string {
  const safePrefix = prefix.replace(/[^A-Za-z0-9-]/g, '-')
  return `${safePrefix}-${randomBytes(8).toString('hex')}`
}

/**
 * A raw ioredis client on the shared test Redis (or `url`); close it with `quit()`.
 *
 * @example
 * ```ts
 * const redis = newRedis()
 * try { await redis.xlen(key) } finally { await redis.quit() }
 * ```
 */
export function newRedis(url: string = redisUrl()): Redis {
  return new Redis(url, { maxRetriesPerRequest: 3, lazyConnect: false })
}
