/**
 * TLS-only Sentinel groups and Clusters for tests: every data node, every
 * sentinel and the cluster bus speak TLS only (`--port 0 --tls-port`,
 * `tls-replication yes`, `tls-cluster yes`), with certificates from
 * {@link makeTestCertificates}. Nothing here answers in plain text.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { findOnPath, freePort, startRedisServer, waitForRedis, type RedisServer, type TestCertificates } from './redis-server.js'

const execFileAsync = promisify(execFile)
const HOST = '127.0.0.1'

/** The TLS settings of a node (the server certificate also serves as its client certificate towards other nodes). */
function tlsFiles(certs: TestCertificates): { certFile: string; keyFile: string; caFile: string } {
  return { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile, caFile: certs.caFile }
}

/** `redis-cli` over TLS (trusting the test CA, showing the server certificate as its client certificate). */
export async function tlsCli(certs: TestCertificates, port: number, args: readonly string[], timeoutMs = 20_000): Promise<string> {
  const { stdout } = await execFileAsync(
    'redis-cli',
    ['--tls', '--cacert', certs.caFile, '--cert', certs.serverCertFile, '--key', certs.serverKeyFile, '-h', HOST, '-p', String(port), ...args],
    { timeout: timeoutMs },
  )
  return stdout
}

/** A TLS-only Redis Cluster. */
export interface TlsCluster {
  readonly nodes: readonly { readonly host: string; readonly port: number }[]
  readonly servers: readonly RedisServer[]
  stop(): Promise<void>
}

/**
 * Starts `masters` TLS-only cluster nodes (`tls-cluster yes`, so the bus and
 * `CLUSTER SLOTS` use TLS ports), creates the cluster with `redis-cli --tls
 * --cluster create` and waits for `cluster_state:ok` on every node.
 */
export async function startTlsCluster(certs: TestCertificates, masters = 3): Promise<TlsCluster> {
  if (findOnPath('redis-cli') === undefined) throw new Error('redis-cli is not on PATH')
  const servers: RedisServer[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(servers.map((s) => s.stop()))
  }
  try {
    for (let i = 0; i < masters; i++) {
      const busPort = await freePort()
      servers.push(
        await startRedisServer({
          tls: { ...tlsFiles(certs), authClients: 'yes' },
          extraArgs: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000', '--cluster-port', String(busPort), '--tls-cluster', 'yes'],
        }),
      )
    }
    const first = servers[0] as RedisServer
    await tlsCli(certs, first.port, ['--cluster', 'create', ...servers.map((s) => `${s.host}:${s.port}`), '--cluster-replicas', '0', '--cluster-yes'], 30_000)
    const deadline = Date.now() + 20_000
    for (const server of servers) {
      for (;;) {
        const info = await tlsCli(certs, server.port, ['cluster', 'info'], 5_000).catch(() => '')
        if (info.includes('cluster_state:ok')) break
        if (Date.now() > deadline) throw new Error(`TLS cluster node ${server.port} did not reach cluster_state:ok:\n${info}`)
        await sleep(50)
      }
    }
    return { nodes: servers.map((s) => ({ host: s.host, port: s.port })), servers, stop }
  } catch (error) {
    await stop()
    throw error
  }
}

/** A TLS-only master, replica and sentinels. */
export interface TlsSentinelGroup {
  readonly masterName: string
  readonly servers: readonly RedisServer[]
  /** `EVENT_REDIS_HOSTS` for the sentinels. */
  readonly hosts: string
  stop(): Promise<void>
}

function trackKill(children: ChildProcess[]): () => Promise<void> {
  return async () => {
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve()
            c.once('exit', () => resolve())
            c.kill('SIGKILL')
          }),
      ),
    )
  }
}

/**
 * Starts a TLS-only master with `replicas` replicas (`tls-replication yes`)
 * and `sentinels` TLS-only sentinels (`tls-port`, `port 0`,
 * `tls-replication yes` so that they reach the data nodes over TLS), and
 * waits until every sentinel knows the replicas and the other sentinels.
 */
export async function startTlsSentinelGroup(certs: TestCertificates, options: { readonly replicas?: number; readonly sentinels?: number } = {}): Promise<TlsSentinelGroup> {
  const binary = findOnPath('redis-server')
  if (binary === undefined) throw new Error('redis-server is not on PATH')
  const masterName = 'rrs-tls-master'
  const servers: RedisServer[] = []
  const children: ChildProcess[] = []
  const dirs: string[] = []
  const killSentinels = trackKill(children)
  const stop = async (): Promise<void> => {
    await killSentinels()
    await Promise.all(servers.map((s) => s.stop()))
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
  }
  process.once('exit', () => {
    for (const c of children) c.kill('SIGKILL')
  })
  try {
    const tls = { ...tlsFiles(certs), authClients: 'yes' as const }
    const master = await startRedisServer({ tls, extraArgs: ['--tls-replication', 'yes'] })
    servers.push(master)
    for (let i = 0; i < (options.replicas ?? 1); i++) {
      servers.push(await startRedisServer({ tls, extraArgs: ['--tls-replication', 'yes', '--replicaof', HOST, String(master.port)] }))
    }
    for (const replica of servers.slice(1)) {
      const deadline = Date.now() + 15_000
      for (;;) {
        const info = await tlsCli(certs, replica.port, ['info', 'replication'], 5_000).catch(() => '')
        if (info.includes('master_link_status:up')) break
        if (Date.now() > deadline) throw new Error(`TLS replica ${replica.port} did not sync:\n${info}`)
        await sleep(50)
      }
    }
    const count = options.sentinels ?? 3
    const ports: number[] = []
    for (let i = 0; i < count; i++) {
      const port = await freePort()
      const dir = await mkdtemp(join(tmpdir(), 'rx-redis-streams-tls-sentinel-'))
      dirs.push(dir)
      const conf = join(dir, 'sentinel.conf')
      await writeFile(
        conf,
        [
          'port 0',
          `tls-port ${port}`,
          `bind ${HOST}`,
          `dir ${dir}`,
          `tls-cert-file ${certs.serverCertFile}`,
          `tls-key-file ${certs.serverKeyFile}`,
          `tls-ca-cert-file ${certs.caFile}`,
          'tls-auth-clients yes',
          'tls-replication yes',
          `sentinel monitor ${masterName} ${HOST} ${master.port} ${Math.floor(count / 2) + 1}`,
          `sentinel down-after-milliseconds ${masterName} 1000`,
          `sentinel failover-timeout ${masterName} 5000`,
          '',
        ].join('\n'),
      )
      const child = spawn(binary, [conf, '--sentinel'], { stdio: 'ignore' })
      children.push(child)
      ports.push(port)
      await waitForRedis(port, 10_000, () => child.exitCode === null && child.signalCode === null, { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile })
    }
    const deadline = Date.now() + 20_000
    for (const port of ports) {
      for (;;) {
        const lines = (await tlsCli(certs, port, ['sentinel', 'master', masterName], 5_000).catch(() => '')).split('\n')
        const field = (name: string): number => Number(lines[lines.indexOf(name) + 1] ?? 0)
        if (field('num-slaves') >= servers.length - 1 && field('num-other-sentinels') >= count - 1) break
        if (Date.now() > deadline) throw new Error(`TLS sentinel ${port} did not discover the group:\n${lines.join('\n')}`)
        await sleep(100)
      }
    }
    return { masterName, servers, hosts: ports.map((p) => `${HOST}:${p}`).join(','), stop }
  } catch (error) {
    await stop()
    throw error
  }
}
