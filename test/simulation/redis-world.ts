/**
 * The simulation's world on a real redis-server, in real time: every simulated
 * process is an event manager with its own connections through a
 * fault-injecting TCP proxy (lost replies, connection resets), and the
 * port-level faults of the {@link BackendView} on top. Publishing and
 * inspection go straight to the server.
 */
import type { StreamBackend } from '../../src/backend/types.js'
import { createEventManager, type EventManager } from '../../src/manager.js'
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js'
import type { SimClock, SimWorld } from './harness.js'
import { Prng } from './prng.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Real time, polled every few ms. */
export class RealClock implements SimClock {
  readonly fired = 0
  onError: (error: unknown) => void = () => undefined
  now(): number {
    return Date.now()
  }
  async runUntil(untilMs: number, done: () => boolean = () => false): Promise<void> {
    while (Date.now() < untilMs) {
      if (done()) return
      await sleep(Math.max(1, Math.min(10, untilMs - Date.now())))
    }
  }
}

export interface RedisWorld extends SimWorld {
  /** Closes every connection of the run (not the server, not the proxy). */
  close(): Promise<void>
  /** Proxy faults injected so far. */
  readonly proxyFaults: () => number
}

/** A world for one seed on `redisUrl` (direct) and `proxy` (faulty path to the same server). */
export async function redisWorld(options: { readonly redisUrl: string; readonly proxy: FaultProxy | undefined; readonly seed: number; readonly topic: string }): Promise<RedisWorld> {
  const carriers = new Map<StreamBackend, EventManager>()
  // A manager made only to own a Redis backend of its own: the port the simulated process uses.
  const carrier = (url: string): StreamBackend => {
    const m = createEventManager({ redisUrl: url, env: {}, groupGauges: false, delayedQueueEnabled: false })
    carriers.set(m.backend, m)
    return m.backend
  }
  const store = carrier(options.redisUrl)
  await store.ping()
  const prng = new Prng(options.seed ^ 0x7e57)
  let timer: NodeJS.Timeout | undefined
  let injected = 0
  const proxy = options.proxy
  return {
    clock: new RealClock(),
    store,
    topic: options.topic,
    callDelays: false,
    settleLimitMs: 45_000,
    afterCloseMs: 1_500,
    processBackend: () => carrier(proxy?.url ?? options.redisUrl),
    crashed: (_name, backend) => {
      void carriers.get(backend)?.close().catch(() => undefined)
    },
    faults: (on) => {
      if (timer !== undefined) clearInterval(timer)
      timer = undefined
      if (!on || proxy === undefined) return
      timer = setInterval(() => {
        const r = prng.next()
        if (r < 0.4) {
          proxy.dropNextReplies(1)
          injected++
        } else if (r < 0.55) {
          proxy.resetAll()
          injected++
        }
      }, 120)
    },
    proxyFaults: () => injected,
    close: async () => {
      if (timer !== undefined) clearInterval(timer)
      await Promise.all([...carriers.values()].map((m) => m.close().catch(() => undefined)))
    },
  }
}

export { startFaultProxy }
