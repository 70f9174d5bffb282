/**
 * A fault-injecting TCP proxy for tests: put it between a client and a private
 * redis-server, then blackhole the link, reset every connection, or let the
 * server execute commands whose replies never arrive.
 *
 * Every client connection gets its own upstream connection. Chunks are
 * forwarded as they come; nothing is parsed, so "the next n replies" means the
 * next n chunks the server sends (a pipelined burst may be one chunk).
 */
import { createServer, Socket, type AddressInfo, type Server } from 'node:net'

const HOST = '127.0.0.1'

/** A running proxy; see {@link startFaultProxy}. */
export interface FaultProxy {
  /** The loopback port the proxy listens on. */
  readonly port: number
  /** `redis://127.0.0.1:<port>` (no credentials: add them yourself). */
  readonly url: string
  /**
   * `true`: stop forwarding in both directions; sockets stay open, new
   * connections are accepted but reach nothing. Data sent meanwhile is held,
   * as TCP would retransmit it, and is delivered when the blackhole ends
   * (`false`) — unless the connection was reset in between.
   */
  blackhole(on: boolean): void
  /** Destroys every client socket and its upstream socket at once (with a TCP RST where the platform allows). */
  resetAll(): void
  /**
   * Keeps forwarding commands but swallows the next `n` server→client chunks
   * (of any connection), then resets each connection that lost one:
   * "executed, reply lost".
   */
  dropNextReplies(n: number): void
  /** The number of client connections accepted so far. */
  readonly connections: number
  /** Stops listening and destroys every connection. Idempotent. */
  close(): Promise<void>
}

interface Link {
  readonly client: Socket
  readonly upstream: Socket
  /** Chunks held while blackholed: client→server, server→client. */
  readonly toServer: Buffer[]
  readonly toClient: Buffer[]
  upstreamConnected: boolean
  lostReply: boolean
}

function reset(socket: Socket): void {
  if (socket.destroyed) return
  // resetAndDestroy sends an RST on a connected TCP socket; fall back to destroy otherwise.
  try {
    if (typeof socket.resetAndDestroy === 'function' && socket.readyState === 'open') {
      socket.resetAndDestroy()
      return
    }
  } catch {
    // not a connected TCP socket: a plain destroy does
  }
  socket.destroy()
}

/**
 * Starts a fault-injecting proxy to `target` on a free loopback port.
 *
 * @example
 * ```ts
 * const proxy = await startFaultProxy({ host: server.host, port: server.port })
 * const events = createEventManager({ redisUrl: proxy.url })
 * proxy.blackhole(true)   // a partition: nothing moves, nothing closes
 * proxy.blackhole(false)
 * proxy.dropNextReplies(1) // the next reply is lost and its connection reset
 * await proxy.close()
 * ```
 */
export async function startFaultProxy(target: { host: string; port: number }): Promise<FaultProxy> {
  const links = new Set<Link>()
  let blackholed = false
  let dropsLeft = 0
  let accepted = 0
  let closed = false

  const teardown = (link: Link): void => {
    if (!links.delete(link)) return
    reset(link.client)
    reset(link.upstream)
  }

  const toServer = (link: Link, chunk: Buffer): void => {
    if (blackholed || !link.upstreamConnected) link.toServer.push(chunk)
    else link.upstream.write(chunk)
  }

  const toClient = (link: Link, chunk: Buffer): void => {
    if (dropsLeft > 0) {
      dropsLeft--
      link.lostReply = true
      if (dropsLeft === 0) {
        for (const l of [...links]) if (l.lostReply) teardown(l)
      }
      return
    }
    if (blackholed) link.toClient.push(chunk)
    else link.client.write(chunk)
  }

  const flush = (link: Link): void => {
    if (link.upstreamConnected) {
      for (const chunk of link.toServer.splice(0)) link.upstream.write(chunk)
    }
    for (const chunk of link.toClient.splice(0)) link.client.write(chunk)
  }

  const server: Server = createServer((client) => {
    accepted++
    client.setNoDelay(true)
    const upstream = new Socket()
    const link: Link = { client, upstream, toServer: [], toClient: [], upstreamConnected: false, lostReply: false }
    links.add(link)
    client.on('data', (chunk: Buffer) => toServer(link, chunk))
    upstream.on('data', (chunk: Buffer) => toClient(link, chunk))
    client.on('error', () => teardown(link))
    upstream.on('error', () => teardown(link))
    client.on('close', () => teardown(link))
    upstream.on('close', () => teardown(link))
    upstream.setNoDelay(true)
    upstream.connect(target.port, target.host, () => {
      link.upstreamConnected = true
      if (!blackholed) flush(link)
    })
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, HOST, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port

  return {
    port,
    url: `redis://${HOST}:${port}`,
    get connections() {
      return accepted
    },
    blackhole(on: boolean) {
      blackholed = on
      if (!on) for (const link of links) flush(link)
    },
    resetAll() {
      for (const link of [...links]) teardown(link)
    },
    dropNextReplies(n: number) {
      if (!Number.isInteger(n) || n < 0) throw new RangeError(`dropNextReplies: n must be a non-negative integer, got ${n}`)
      dropsLeft = n
    },
    close() {
      if (closed) return Promise.resolve()
      closed = true
      for (const link of [...links]) teardown(link)
      return new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
