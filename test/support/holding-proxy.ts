/**
 * A TCP proxy for the adversarial read tests: it holds the replies of the one
 * connection that sent a chunk matching {@link HoldingProxy.hold}'s predicate
 * (its commands still reach the server and run), then forwards part of them
 * and resets the connection: "the connection was cut mid-reply".
 */
import { createServer, Socket, type AddressInfo, type Server } from 'node:net'
import { Redis } from 'ioredis'
import { afterAll, beforeAll } from 'vitest'
import { startRedisServer, type RedisServer } from './redis-server.js'

/** A running proxy; see {@link startHoldingProxy}. */
export interface HoldingProxy {
  /** `redis://[user@]127.0.0.1:<port>`. */
  readonly url: (user?: string) => string
  /** From now on, the first connection that sends a chunk matching `match` gets every later reply held. */
  hold(match: (chunk: Buffer) => boolean): void
  /** Bytes of replies held so far. */
  held(): number
  /** Forwards the first `bytes` held, then resets the held connection (client side) and closes its upstream. */
  cut(bytes: number): void
  /** Forwards every reply held so far and stops holding (the replies were only late). */
  release(): void
  close(): Promise<void>
}

interface Link {
  readonly client: Socket
  readonly upstream: Socket
  readonly chunks: Buffer[]
  holding: boolean
}

/** Starts a {@link HoldingProxy} to `target` on a free loopback port. */
export async function startHoldingProxy(target: { host: string; port: number }): Promise<HoldingProxy> {
  const sockets = new Set<Socket>()
  let match: ((chunk: Buffer) => boolean) | undefined
  let heldLink: Link | undefined
  const server: Server = createServer((client) => {
    const upstream = new Socket()
    sockets.add(client).add(upstream)
    const link: Link = { client, upstream, chunks: [], holding: false }
    const early: Buffer[] = []
    let connected = false
    client.on('data', (chunk: Buffer) => {
      if (match !== undefined && heldLink === undefined && match(chunk)) {
        link.holding = true
        heldLink = link
        match = undefined
      }
      if (connected) upstream.write(chunk)
      else early.push(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (link.holding) link.chunks.push(chunk)
      else client.write(chunk)
    })
    const end = (): void => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', end).on('close', end)
    upstream.on('error', end).on('close', end)
    upstream.connect(target.port, target.host, () => {
      connected = true
      for (const c of early.splice(0)) upstream.write(c)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    url: (user) => `redis://${user === undefined ? '' : `${user}@`}127.0.0.1:${String(port)}`,
    hold(m) {
      heldLink = undefined
      match = m
    },
    held: () => (heldLink?.chunks ?? []).reduce((n, c) => n + c.length, 0),
    cut(bytes) {
      const link = heldLink
      if (link === undefined) throw new Error('nothing held')
      const all = Buffer.concat(link.chunks)
      link.chunks.length = 0
      link.client.write(all.subarray(0, Math.min(bytes, all.length)), () => {
        link.client.resetAndDestroy()
        link.upstream.destroy()
      })
    },
    release() {
      const link = heldLink
      if (link === undefined) throw new Error('nothing held')
      link.holding = false
      const all = Buffer.concat(link.chunks)
      link.chunks.length = 0
      if (!link.client.destroyed) link.client.write(all)
    },
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/** A private redis-server, a direct client and a holding proxy in front of the server. */
export interface HeldServer {
  readonly server: RedisServer
  readonly direct: Redis
  readonly proxy: HoldingProxy
}

/**
 * A private redis-server with a holding proxy for the test file (started in `beforeAll`, stopped in `afterAll`),
 * as `withProxiedServer` does with the fault proxy:
 *
 * ```ts
 * let server: RedisServer, direct: Redis, proxy: HoldingProxy
 * withHoldingServer((s) => ({ server, direct, proxy } = s))
 * ```
 */
export function withHoldingServer(use: (started: HeldServer) => void): void {
  let started: HeldServer | undefined
  beforeAll(async () => {
    const server = await startRedisServer()
    const proxy = await startHoldingProxy({ host: server.host, port: server.port })
    started = { server, proxy, direct: new Redis(server.url) }
    use(started)
  }, 30_000)
  afterAll(async () => {
    if (started === undefined) return
    await started.proxy.close()
    await started.direct.quit()
    await started.server.stop()
  })
}

/** The byte budget a packed read-ahead round's script call carries (8 MiB), as it is written on the wire. */
const PACKED_BUDGET_MARK = Buffer.from(String(8 << 20))

/** Whether a chunk written to Redis is a packed read-ahead round (an EVAL/EVALSHA carrying the byte budget). */
export const isPackedCall = (chunk: Buffer): boolean => chunk.includes(PACKED_BUDGET_MARK) && /eval/i.test(chunk.toString('latin1'))
