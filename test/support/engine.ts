/**
 * What the engine's unit tests share: a polling wait, unique names, and event
 * managers over a given backend that are closed after each test.
 */
import { afterEach } from 'vitest'
import type { StreamBackend } from '../../src/backend/types.js'
import { createEventManager, type EventManager } from '../../src/index.js'

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Polls `condition` every 5 ms; rejects naming `what` after `timeoutMs`. */
export async function waitFor(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

let n = 0
/** A name unique to this process and call. */
export const name = (p: string): string => `${p}-${String(process.pid)}-${String(n++)}`

/** Makes event managers that are closed after each test; `track` adds one made elsewhere. */
export interface ManagerFactory {
  (backend: StreamBackend, options?: Record<string, unknown>): EventManager
  track(manager: EventManager): EventManager
}

/**
 * Registers an afterEach that closes every manager made or tracked through the
 * returned factory (call it at the top level of a test file). The managers it
 * makes ignore the process environment.
 */
export function trackManagers(): ManagerFactory {
  const managers: EventManager[] = []
  afterEach(async () => {
    await Promise.all(managers.splice(0).map((m) => m.close()))
  })
  const track = (m: EventManager): EventManager => {
    managers.push(m)
    return m
  }
  return Object.assign((backend: StreamBackend, options: Record<string, unknown> = {}) => track(createEventManager({ backend, env: {}, ...options })), { track })
}
