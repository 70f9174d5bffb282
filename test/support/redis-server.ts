/**
 * Private `redis-server` processes for tests: the harness's shared instance and
 * the extra instances that fault tests kill, pause, restart or cluster.
 *
 * Every instance runs on a free loopback port with its own temporary directory;
 * `stop()` removes both, and a process-exit hook SIGKILLs anything still running
 * so that a crashed test run never leaves servers behind.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants as fsConstants, readFileSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createConnection, createServer, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'

const execFileAsync = promisify(execFile)

const HOST = '127.0.0.1'

/** The certificate a TLS readiness probe presents (the server's own: it is valid for client auth too). */
interface TlsProbe {
  readonly certFile: string
  readonly keyFile: string
}
const START_TIMEOUT_MS = 10_000

/** Options of {@link startRedisServer}. */
export interface RedisServerOptions {
  /** Append-only file persistence (`--appendonly yes`), so data survives `kill()` + `restart()`. */
  readonly aof?: boolean
  /** AOF fsync policy; `always` loses nothing on SIGKILL. Default `everysec`. */
  readonly appendfsync?: 'always' | 'everysec'
  /** `--requirepass`: the default user needs this password. */
  readonly password?: string
  /** More `redis-server` arguments, e.g. `['--maxmemory', '10mb']`. */
  readonly extraArgs?: readonly string[]
  /**
   * TLS only (`--port 0 --tls-port <port>`), with these PEM files (see
   * {@link makeTestCertificates}); `authClients` is `--tls-auth-clients`
   * (default `no`: no client certificate needed).
   */
  readonly tls?: { readonly certFile: string; readonly keyFile: string; readonly caFile: string; readonly authClients?: 'yes' | 'no' | 'optional' }
}

/** A running private `redis-server`. */
export interface RedisServer {
  /** `redis://127.0.0.1:<port>` (`rediss://` with TLS), with `:<password>@` when a password is set. */
  readonly url: string
  readonly host: string
  readonly port: number
  /** The working directory (AOF files live here). */
  readonly dir: string
  /** Stops the server (SIGTERM, then SIGKILL) and removes its directory. Idempotent. */
  stop(): Promise<void>
  /** SIGKILL: a crash. The directory stays, so `restart()` recovers AOF data. */
  kill(): Promise<void>
  /** Starts the server again on the same port and directory (stopping it first if it runs). */
  restart(): Promise<void>
  /** SIGSTOP: the server keeps its connections but answers nothing. */
  pause(): void
  /** SIGCONT after {@link pause}. */
  resume(): void
}

/** Options of {@link startRedisCluster}. */
export interface RedisClusterOptions {
  /** Number of masters (at least 3, as Redis Cluster requires). */
  readonly masters: number
  /** Replicas per master (default 0), for failover tests. */
  readonly replicas?: number
}

/** A running private Redis Cluster (replicas when asked for). */
export interface RedisCluster {
  readonly nodes: readonly { readonly host: string; readonly port: number }[]
  /** Every node's server (to kill, pause or restart one); the first `masters` start as masters. */
  readonly servers: readonly RedisServer[]
  /** Stops every node and removes their directories. Idempotent. */
  stop(): Promise<void>
}

const live = new Set<ChildProcess>()
let exitHookInstalled = false

function trackChild(child: ChildProcess): void {
  live.add(child)
  child.once('exit', () => live.delete(child))
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL')
    })
  }
}

/**
 * The absolute path of an executable found on `PATH`, or undefined.
 *
 * @example
 * ```ts
 * findOnPath('redis-server') // '/usr/bin/redis-server'
 * ```
 */
export function findOnPath(command: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (dir.length === 0) continue
    const candidate = join(dir, command)
    try {
      accessSync(candidate, fsConstants.X_OK)
      return candidate
    } catch {
      // not here; keep looking
    }
  }
  return undefined
}

/**
 * A TCP port that was free a moment ago on the loopback interface (bind to 0, read, close).
 *
 * @example
 * ```ts
 * const port = await freePort()
 * ```
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, HOST, () => {
      const address = server.address()
      if (address === null || typeof address === 'string') {
        server.close()
        reject(new Error('could not read the port of a listening socket'))
        return
      }
      server.close(() => resolve(address.port))
    })
  })
}

/** Sends one inline command and resolves with the first reply line (or rejects on a socket error/timeout). */
function probe(port: number, timeoutMs: number, tls?: TlsProbe): Promise<string> {
  return new Promise((resolve, reject) => {
    // A TLS probe checks liveness only: it trusts any certificate, and shows the server's own as a client certificate.
    const socket: Socket =
      tls === undefined
        ? createConnection({ host: HOST, port })
        : tlsConnect({ host: HOST, port, rejectUnauthorized: false, cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) })
    let buffer = ''
    const done = (fn: () => void): void => {
      socket.destroy()
      fn()
    }
    socket.setTimeout(timeoutMs, () => done(() => reject(new Error('timeout'))))
    socket.once('error', (err) => done(() => reject(err)))
    socket.once(tls === undefined ? 'connect' : 'secureConnect', () => socket.write('PING\r\n'))
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('utf8')
      const eol = buffer.indexOf('\r\n')
      if (eol >= 0) done(() => resolve(buffer.slice(0, eol)))
    })
  })
}

/**
 * Resolves once a Redis server on `127.0.0.1:port` answers PING (`+PONG`, or
 * `-NOAUTH` when it requires a password); `-LOADING` means not yet.
 */
export async function waitForRedis(port: number, timeoutMs = START_TIMEOUT_MS, isAlive: () => boolean = () => true, tls?: TlsProbe): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last = 'no answer'
  while (Date.now() < deadline) {
    if (!isAlive()) throw new Error(`redis-server on port ${port} exited while starting`)
    try {
      const reply = await probe(port, 1_000, tls)
      if (reply.startsWith('+PONG') || reply.startsWith('-NOAUTH')) return
      last = reply
    } catch (err) {
      last = (err as Error).message
    }
    await sleep(25)
  }
  throw new Error(`redis-server on port ${port} did not answer PING within ${timeoutMs} ms (last: ${last})`)
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true)
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit)
      resolve(false)
    }, timeoutMs)
    const onExit = (): void => {
      clearTimeout(timer)
      resolve(true)
    }
    child.once('exit', onExit)
  })
}

function isRunning(child: ChildProcess | undefined): child is ChildProcess {
  return child !== undefined && child.exitCode === null && child.signalCode === null
}

async function terminate(child: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (!isRunning(child)) return
  child.kill('SIGCONT') // a paused server handles SIGTERM only once it runs again
  child.kill(signal)
  if (!(await waitForExit(child, 5_000))) {
    child.kill('SIGKILL')
    await waitForExit(child, 5_000)
  }
}

/**
 * Spawns redis-server and waits until this very process logs that it is ready
 * and the port answers PING. Readiness comes from the child's own log, so a
 * server of someone else that won a port race is never mistaken for ours.
 * Rejects (with the server's output) when it exits first.
 */
async function spawnServer(binary: string, args: readonly string[], port: number, tls?: TlsProbe): Promise<ChildProcess> {
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  trackChild(child)
  let output = ''
  let tail = ''
  let markReady: () => void = () => undefined
  const ready = new Promise<void>((resolve) => (markReady = resolve))
  const collect = (chunk: Buffer): void => {
    const text = chunk.toString('utf8')
    if (output.length < 8_192) output += text
    if ((tail + text).includes('Ready to accept connections')) markReady()
    tail = text.slice(-64)
  }
  child.stdout.on('data', collect)
  child.stderr.on('data', collect)
  const failed = new Promise<never>((_, reject) => {
    child.once('error', reject)
    child.once('exit', (code, signal) => reject(new Error(`redis-server exited (${signal ?? `code ${code}`})`)))
  })
  failed.catch(() => undefined) // observed below; after a successful start an exit is expected
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not ready within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS)
  })
  try {
    await Promise.race([ready, failed, timeout])
    await Promise.race([waitForRedis(port, START_TIMEOUT_MS, () => isRunning(child), tls), failed])
  } catch (err) {
    await terminate(child, 'SIGKILL')
    throw new Error(`could not start redis-server on port ${port}: ${(err as Error).message}\n${output.trim()}`, { cause: err })
  } finally {
    clearTimeout(timer)
  }
  return child
}

function redisServerBinary(): string {
  const binary = findOnPath('redis-server')
  if (binary === undefined) throw new Error('redis-server is not on PATH (apt-get install -y redis-server)')
  return binary
}

function serverArgs(port: number, dir: string, options: RedisServerOptions): string[] {
  const tls = options.tls
  const ports = tls === undefined ? ['--port', String(port)] : ['--port', '0', '--tls-port', String(port)]
  const args = [...ports, '--bind', HOST, '--save', '', '--dir', dir, '--daemonize', 'no', '--loglevel', 'notice']
  if (tls !== undefined) {
    args.push('--tls-cert-file', tls.certFile, '--tls-key-file', tls.keyFile, '--tls-ca-cert-file', tls.caFile, '--tls-auth-clients', tls.authClients ?? 'no')
  }
  if (options.aof === true) {
    args.push('--appendonly', 'yes', '--appendfsync', options.appendfsync ?? 'everysec')
  } else {
    args.push('--appendonly', 'no')
  }
  if (options.password !== undefined) args.push('--requirepass', options.password)
  args.push(...(options.extraArgs ?? []))
  return args
}

/**
 * Starts a private `redis-server` on a free loopback port with its own temporary directory.
 *
 * @example
 * ```ts
 * const server = await startRedisServer({ aof: true, appendfsync: 'always' })
 * try {
 *   await server.kill()
 *   await server.restart() // the AOF brings the data back
 * } finally {
 *   await server.stop()
 * }
 * ```
 */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  const binary = redisServerBinary()
  const dir = await mkdtemp(join(tmpdir(), 'rx-redis-streams-'))
  let port = 0
  let child: ChildProcess | undefined
  try {
    // Another process may take the free port before redis-server binds it: try a few ports.
    for (let attempt = 0; child === undefined; attempt++) {
      port = await freePort()
      try {
        child = await spawnServer(binary, serverArgs(port, dir, options), port, options.tls)
      } catch (err) {
        if (attempt >= 2) throw err
      }
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    throw err
  }

  let current: ChildProcess | undefined = child
  let stopped = false
  const auth = options.password === undefined ? '' : `:${encodeURIComponent(options.password)}@`
  return {
    url: `${options.tls === undefined ? 'redis' : 'rediss'}://${auth}${HOST}:${port}`,
    host: HOST,
    port,
    dir,
    async stop() {
      if (stopped) return
      stopped = true
      await terminate(current, 'SIGTERM')
      await rm(dir, { recursive: true, force: true })
    },
    async kill() {
      await terminate(current, 'SIGKILL')
    },
    async restart() {
      if (stopped) throw new Error('cannot restart a stopped redis-server')
      await terminate(current, 'SIGTERM')
      current = await spawnServer(binary, serverArgs(port, dir, options), port, options.tls)
    },
    pause() {
      if (isRunning(current)) current.kill('SIGSTOP')
    },
    resume() {
      if (isRunning(current)) current.kill('SIGCONT')
    },
  }
}

async function redisCli(args: readonly string[], timeoutMs = 20_000): Promise<string> {
  const { stdout } = await execFileAsync('redis-cli', args, { timeout: timeoutMs })
  return stdout
}

/**
 * Starts a Redis Cluster of `masters` private nodes without replicas and waits
 * until every node reports `cluster_state:ok`.
 *
 * @example
 * ```ts
 * const cluster = await startRedisCluster({ masters: 3 })
 * try {
 *   const config = loadConfig({ redisHosts: cluster.nodes.map((n) => `${n.host}:${n.port}`) })
 * } finally {
 *   await cluster.stop()
 * }
 * ```
 */
export async function startRedisCluster(options: RedisClusterOptions = { masters: 3 }): Promise<RedisCluster> {
  if (options.masters < 3) throw new Error('a Redis Cluster needs at least 3 masters')
  if (findOnPath('redis-cli') === undefined) throw new Error('redis-cli is not on PATH (apt-get install -y redis-server)')
  const servers: RedisServer[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(servers.map((s) => s.stop()))
  }
  try {
    const total = options.masters * (1 + (options.replicas ?? 0))
    for (let i = 0; i < total; i++) {
      // The cluster bus gets a free port of its own (instead of port + 10000, which may be taken).
      const busPort = await freePort()
      servers.push(
        await startRedisServer({
          extraArgs: [
            '--cluster-enabled', 'yes',
            '--cluster-config-file', 'nodes.conf',
            '--cluster-node-timeout', '2000',
            '--cluster-port', String(busPort),
          ],
        }),
      )
    }
    const endpoints = servers.map((s) => `${s.host}:${s.port}`)
    const create = async (): Promise<void> => {
      await redisCli(['--cluster', 'create', ...endpoints, '--cluster-replicas', String(options.replicas ?? 0), '--cluster-yes'])
      const deadline = Date.now() + 15_000
      for (const server of servers) {
        for (;;) {
          const info = await redisCli(['-h', server.host, '-p', String(server.port), 'cluster', 'info'], 5_000)
          if (info.includes('cluster_state:ok')) break
          if (Date.now() > deadline) throw new Error(`cluster node ${server.port} did not reach cluster_state:ok:\n${info}`)
          await sleep(50)
        }
      }
    }
    if ((options.replicas ?? 0) > 0) {
      // Every replica has synced before the cluster is handed over (the tests waited for it themselves, 5 s of sync delay later).
      await withoutSyncDelay(servers.map((s) => s.port), async () => {
        await create()
        for (const server of servers) {
          const role = await redisCli(['-h', server.host, '-p', String(server.port), 'role'], 5_000)
          if (role.startsWith('slave')) await waitForReplicaSync(server.port)
        }
      })
    } else {
      await create()
    }
    return { nodes: servers.map((s) => ({ host: s.host, port: s.port })), servers, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

/** Certificates made by {@link makeTestCertificates}: file paths and PEM texts. */
export interface TestCertificates {
  readonly dir: string
  /** The CA that signed the server and client certificates. */
  readonly caFile: string
  readonly caPem: string
  /** Server certificate for `localhost` and `127.0.0.1`, and its key. */
  readonly serverCertFile: string
  readonly serverKeyFile: string
  /** A client certificate (mutual TLS) signed by the CA, and its key. */
  readonly clientCertPem: string
  readonly clientKeyPem: string
  /** Another CA that signed nothing here: trusting it alone must fail verification. */
  readonly otherCaPem: string
  /** Removes the directory. */
  cleanup(): Promise<void>
}

async function openssl(args: readonly string[], cwd: string): Promise<void> {
  await execFileAsync('openssl', args, { cwd, timeout: 30_000 })
}

/**
 * Makes a throw-away CA, a server certificate (SAN `localhost`, `127.0.0.1`)
 * and a client certificate signed by it, and an unrelated second CA, with
 * the `openssl` command line.
 *
 * @example
 * ```ts
 * const certs = await makeTestCertificates()
 * const server = await startRedisServer({ tls: { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile, caFile: certs.caFile } })
 * ```
 */
export async function makeTestCertificates(): Promise<TestCertificates> {
  if (findOnPath('openssl') === undefined) throw new Error('openssl is not on PATH')
  const dir = await mkdtemp(join(tmpdir(), 'rx-redis-streams-tls-'))
  const days = ['-days', '2']
  const ca = async (name: string): Promise<void> => {
    await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, ...days, '-subj', `/CN=${name}`], dir)
  }
  const signed = async (name: string, cn: string, ext: string): Promise<void> => {
    await writeFile(join(dir, `${name}.ext`), ext)
    await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir)
    await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, ...days, '-extfile', `${name}.ext`], dir)
  }
  try {
    await ca('ca')
    await ca('other-ca')
    await signed('server', 'localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n')
    await signed('client', 'rrs-test-client', 'extendedKeyUsage=clientAuth\n')
    const read = (file: string): Promise<string> => readFile(join(dir, file), 'utf8')
    return {
      dir,
      caFile: join(dir, 'ca.crt'),
      caPem: await read('ca.crt'),
      serverCertFile: join(dir, 'server.crt'),
      serverKeyFile: join(dir, 'server.key'),
      clientCertPem: await read('client.crt'),
      clientKeyPem: await read('client.key'),
      otherCaPem: await read('other-ca.crt'),
      cleanup: () => rm(dir, { recursive: true, force: true }),
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true })
    throw error
  }
}

/** Options of {@link startSentinelGroup}. */
export interface SentinelGroupOptions {
  /** Replicas of the master (default 2). */
  readonly replicas?: number
  /** Sentinels (default 3; the quorum is a majority). */
  readonly sentinels?: number
  /** Default `rrs-master`. */
  readonly masterName?: string
  /** `down-after-milliseconds` (default 1000). */
  readonly downAfterMs?: number
  /** `failover-timeout` (default 5000). */
  readonly failoverTimeoutMs?: number
  /** Extra arguments for every data node (e.g. AOF). */
  readonly serverOptions?: RedisServerOptions
}

/** A master, its replicas and sentinels on loopback ports (see {@link startSentinelGroup}). */
export interface SentinelGroup {
  readonly masterName: string
  /** Every data node; the first one is the initial master. */
  readonly servers: readonly RedisServer[]
  readonly sentinelPorts: readonly number[]
  /** `EVENT_REDIS_HOSTS` for the sentinels. */
  readonly hosts: string
  /** The master the sentinels report now. */
  currentMaster(): Promise<{ host: string; port: number }>
  /** The data node on `port`. */
  server(port: number): RedisServer
  /** Asks a sentinel for a graceful failover (`SENTINEL FAILOVER`). */
  failover(): Promise<void>
  /** Resolves once the sentinels report a master other than `port` (or rejects after `timeoutMs`). */
  waitForNewMaster(port: number, timeoutMs?: number): Promise<{ host: string; port: number }>
  /** Stops sentinels and servers, removes their directories. */
  stop(): Promise<void>
}

/**
 * Resolves once the replica on `port` has synced with its master
 * (`master_link_status:up`), or rejects after `timeoutMs`.
 *
 * @example
 * ```ts
 * const replica = await startRedisServer({ extraArgs: ['--replicaof', master.host, String(master.port)] })
 * await waitForReplicaSync(replica.port) // WAIT 1 can be met from now on
 * ```
 */
export async function waitForReplicaSync(port: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const info = await redisCli(['-h', HOST, '-p', String(port), 'info', 'replication'], 5_000).catch(() => '')
    if (info.includes('master_link_status:up')) return
    if (Date.now() > deadline) throw new Error(`replica ${port} did not sync with its master:\n${info}`)
    await sleep(50)
  }
}

/**
 * Runs `setup` (replicas joining the masters on `ports`) with those masters'
 * `repl-diskless-sync-delay` at 0, then gives it back its value. Redis waits
 * that delay (5 s by default) before a full sync, for more replicas to come:
 * time a test's setup only waits out. Syncs after the setup (a failover, a
 * restarted node rejoining) wait as before.
 */
async function withoutSyncDelay<T>(ports: readonly number[], setup: () => Promise<T>): Promise<T> {
  const config = (port: number, args: readonly string[]): Promise<string> => redisCli(['-h', HOST, '-p', String(port), 'config', ...args], 5_000)
  const previous = await Promise.all(ports.map(async (port) => (await config(port, ['get', 'repl-diskless-sync-delay'])).trim().split('\n')[1] ?? '5'))
  await Promise.all(ports.map((port) => config(port, ['set', 'repl-diskless-sync-delay', '0'])))
  try {
    return await setup()
  } finally {
    await Promise.all(ports.map((port, i) => config(port, ['set', 'repl-diskless-sync-delay', previous[i] ?? '5']).catch(() => '')))
  }
}

/**
 * Starts a master with replicas and sentinels that monitor it (quorum: a
 * majority), on free loopback ports, and waits until replication is up and
 * every sentinel knows the replicas.
 *
 * @example
 * ```ts
 * const group = await startSentinelGroup({ replicas: 2, sentinels: 3 })
 * const events = createEventManager({ env: { EVENT_REDIS_HOSTS: group.hosts, EVENT_REDIS_MASTER_NAME: group.masterName } })
 * await group.failover()
 * ```
 */
export async function startSentinelGroup(options: SentinelGroupOptions = {}): Promise<SentinelGroup> {
  const binary = redisServerBinary()
  const masterName = options.masterName ?? 'rrs-master'
  const servers: RedisServer[] = []
  const sentinels: ChildProcess[] = []
  const sentinelPorts: number[] = []
  const dirs: string[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(sentinels.map((c) => terminate(c, 'SIGKILL')))
    await Promise.all(servers.map((s) => s.stop()))
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
  }
  try {
    const master = await startRedisServer(options.serverOptions ?? {})
    servers.push(master)
    await withoutSyncDelay([master.port], async () => {
      for (let i = 0; i < (options.replicas ?? 2); i++) {
        const base = options.serverOptions ?? {}
        servers.push(await startRedisServer({ ...base, extraArgs: [...(base.extraArgs ?? []), '--replicaof', HOST, String(master.port)] }))
      }
      await Promise.all(servers.slice(1).map((s) => waitForReplicaSync(s.port)))
    })
    const count = options.sentinels ?? 3
    const quorum = Math.floor(count / 2) + 1
    for (let i = 0; i < count; i++) {
      const port = await freePort()
      const dir = await mkdtemp(join(tmpdir(), 'rx-redis-streams-sentinel-'))
      dirs.push(dir)
      const conf = join(dir, 'sentinel.conf')
      await writeFile(
        conf,
        [
          `port ${port}`,
          `bind ${HOST}`,
          `dir ${dir}`,
          `sentinel monitor ${masterName} ${HOST} ${master.port} ${quorum}`,
          `sentinel down-after-milliseconds ${masterName} ${options.downAfterMs ?? 1_000}`,
          `sentinel failover-timeout ${masterName} ${options.failoverTimeoutMs ?? 5_000}`,
          `sentinel parallel-syncs ${masterName} 1`,
          '',
        ].join('\n'),
      )
      const child = spawn(binary, [conf, '--sentinel'], { stdio: 'ignore' })
      trackChild(child)
      sentinels.push(child)
      sentinelPorts.push(port)
      await waitForRedis(port, START_TIMEOUT_MS, () => isRunning(child))
    }
    // Every sentinel has discovered the replicas (and the other sentinels) before a test fails anything over.
    const deadline = Date.now() + 15_000
    for (const port of sentinelPorts) {
      for (;;) {
        const reply = await redisCli(['-h', HOST, '-p', String(port), 'sentinel', 'master', masterName], 5_000).catch(() => '')
        const lines = reply.split('\n')
        const field = (name: string): number => Number(lines[lines.indexOf(name) + 1] ?? 0)
        if (field('num-slaves') >= servers.length - 1 && field('num-other-sentinels') >= count - 1) break
        if (Date.now() > deadline) throw new Error(`sentinel ${port} did not discover the group:\n${reply}`)
        await sleep(100)
      }
    }
    const currentMaster = async (): Promise<{ host: string; port: number }> => {
      for (const port of sentinelPorts) {
        const reply = await redisCli(['-h', HOST, '-p', String(port), 'sentinel', 'get-master-addr-by-name', masterName], 5_000).catch(() => '')
        const [host, p] = reply.trim().split('\n')
        if (host !== undefined && p !== undefined && p.length > 0) return { host, port: Number(p) }
      }
      throw new Error('no sentinel answered get-master-addr-by-name')
    }
    return {
      masterName,
      servers,
      sentinelPorts,
      hosts: sentinelPorts.map((p) => `${HOST}:${p}`).join(','),
      currentMaster,
      server(port) {
        const found = servers.find((s) => s.port === port)
        if (found === undefined) throw new Error(`no data node on port ${port}`)
        return found
      },
      async failover() {
        await redisCli(['-h', HOST, '-p', String(sentinelPorts[0]), 'sentinel', 'failover', masterName], 5_000)
      },
      async waitForNewMaster(port, timeoutMs = 30_000) {
        const until = Date.now() + timeoutMs
        for (;;) {
          const now = await currentMaster().catch(() => undefined)
          if (now !== undefined && now.port !== port) return now
          if (Date.now() > until) throw new Error(`the sentinels still report master ${port} after ${timeoutMs} ms`)
          await sleep(50)
        }
      },
      stop,
    }
  } catch (error) {
    await stop()
    throw error
  }
}
