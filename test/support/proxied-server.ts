/**
 * The fixture of the fault tests that go through a proxy: for one test file, a
 * private redis-server, a fault-injecting TCP proxy in front of it and a
 * direct client to the server.
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll } from 'vitest'
import { startFaultProxy, type FaultProxy } from './fault-proxy.js'
import { startRedisServer, type RedisServer } from './redis-server.js'

export interface ProxiedServer {
  readonly server: RedisServer
  readonly proxy: FaultProxy
  /** A client straight to the server (not through the proxy), for setup and checks. */
  readonly direct: Redis
}

/**
 * Starts the three before the file's tests (beforeAll) and stops them after
 * (afterAll); `use` gets them once started.
 *
 * @example
 * ```ts
 * let proxy: FaultProxy
 * withProxiedServer((s) => ({ proxy } = s))
 * ```
 */
export interface PrivateServer {
  readonly server: RedisServer
  /** A client straight to the server, for setup and checks. */
  readonly direct: Redis
}

/**
 * A private redis-server and a direct client to it, for the file (started in
 * beforeAll, stopped in afterAll); `use` gets them once started.
 *
 * @example
 * ```ts
 * let direct: Redis
 * withPrivateServer((s) => ({ direct } = s))
 * ```
 */
export function withPrivateServer(use: (started: PrivateServer) => void, directOptions: { readonly maxRetriesPerRequest?: number } = {}): void {
  let started: PrivateServer | undefined
  beforeAll(async () => {
    const server = await startRedisServer()
    started = { server, direct: new Redis(server.url, directOptions) }
    use(started)
  }, 30_000)
  afterAll(async () => {
    if (started === undefined) return
    await started.direct.quit()
    await started.server.stop()
  })
}

export function withProxiedServer(use: (started: ProxiedServer) => void, directOptions: { readonly maxRetriesPerRequest?: number } = {}): void {
  let started: ProxiedServer | undefined
  beforeAll(async () => {
    const server = await startRedisServer()
    const proxy = await startFaultProxy({ host: server.host, port: server.port })
    started = { server, proxy, direct: new Redis(server.url, directOptions) }
    use(started)
  }, 30_000)
  afterAll(async () => {
    if (started === undefined) return
    await started.direct.quit()
    await started.proxy.close()
    await started.server.stop()
  })
}
