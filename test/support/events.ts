/**
 * Helpers for tests that run event managers against the harness's Redis.
 */
import { afterEach } from 'vitest'
import { createEventManager, type EventManager, type EventManagerOptions } from '../../src/index.js'
import { redisUrl } from './redis.js'

const open: EventManager[] = []

afterEach(async () => {
  await Promise.all(open.splice(0).map((m) => m.close()))
})

/** An event manager on the test Redis (or `options.redisUrl`), closed after the test. */
export function testEvents(options: EventManagerOptions = {}): EventManager {
  const manager = createEventManager({ redisUrl: redisUrl(), env: {}, ...options })
  open.push(manager)
  return manager
}

/** Polls `condition` until it holds, or fails after `timeoutMs` with `what`. */
export async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
