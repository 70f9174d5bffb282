/**
 * Slot surgery on a test Redis Cluster: which node owns a key's slot, and
 * moving a slot (with its keys) from one master to another the way
 * `redis-cli --cluster reshard` does (IMPORTING/MIGRATING, MIGRATE, SETSLOT
 * NODE on every master). While a slot moves, clients meet ASK and TRYAGAIN;
 * once it moved, a client with the old slot map meets MOVED.
 */
import { Redis } from 'ioredis'
import type { RedisCluster } from './redis-server.js'

/** A plain connection to one cluster node (not cluster-aware). */
export function nodeClient(port: number, host = '127.0.0.1'): Redis {
  return new Redis({ host, port, lazyConnect: false, maxRetriesPerRequest: 1 })
}

/** The slot of a key (`CLUSTER KEYSLOT`, asked of any node). */
export async function keySlot(node: Redis, key: string): Promise<number> {
  return Number(await node.call('CLUSTER', 'KEYSLOT', key))
}

interface SlotRange {
  readonly from: number
  readonly to: number
  readonly port: number
  readonly id: string
}

/** The masters' slot ranges (`CLUSTER SLOTS`). */
export async function slotRanges(node: Redis): Promise<SlotRange[]> {
  const reply = (await node.call('CLUSTER', 'SLOTS')) as [number, number, [string, number, string], ...unknown[]][]
  return reply.map(([from, to, master]) => ({ from, to, port: master[1], id: master[2] }))
}

/** The port of the master that serves `slot` now. */
export async function ownerOf(node: Redis, slot: number): Promise<{ port: number; id: string }> {
  const range = (await slotRanges(node)).find((r) => slot >= r.from && slot <= r.to)
  if (range === undefined) throw new Error(`no master serves slot ${slot}`)
  return { port: range.port, id: range.id }
}

/** Every master's node id and port. */
export async function masters(node: Redis): Promise<{ port: number; id: string }[]> {
  const seen = new Map<string, number>()
  for (const r of await slotRanges(node)) seen.set(r.id, r.port)
  return [...seen].map(([id, port]) => ({ id, port }))
}

/**
 * Moves `slot` with all its keys from its current master to the master on
 * `toPort`. `pauseMs` waits between the MIGRATING/IMPORTING marks and the
 * key transfer, and again before the final SETSLOT NODE, so that traffic
 * meets the ASK/TRYAGAIN window. Resolves once every master agrees.
 */
export async function moveSlot(cluster: RedisCluster, slot: number, toPort: number, options: { readonly pauseMs?: number } = {}): Promise<void> {
  const clients = new Map<number, Redis>()
  const client = (port: number): Redis => {
    let c = clients.get(port)
    if (c === undefined) {
      c = nodeClient(port)
      clients.set(port, c)
    }
    return c
  }
  const pause = (): Promise<void> => new Promise((r) => setTimeout(r, options.pauseMs ?? 0))
  try {
    const any = client(toPort)
    const from = await ownerOf(any, slot)
    if (from.port === toPort) return
    const to = { port: toPort, id: String(await client(toPort).call('CLUSTER', 'MYID')) }
    const source = client(from.port)
    const target = client(to.port)
    await target.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id)
    await source.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id)
    await pause()
    for (;;) {
      const keys = (await source.call('CLUSTER', 'GETKEYSINSLOT', slot, 500)) as string[]
      if (keys.length === 0) break
      await source.call('MIGRATE', '127.0.0.1', to.port, '', 0, 10_000, 'REPLACE', 'KEYS', ...keys)
    }
    await pause()
    // The target first, then the source, then every other master (as redis-cli does).
    await target.call('CLUSTER', 'SETSLOT', slot, 'NODE', to.id)
    await source.call('CLUSTER', 'SETSLOT', slot, 'NODE', to.id)
    for (const m of await masters(any)) {
      if (m.port !== from.port && m.port !== to.port) await client(m.port).call('CLUSTER', 'SETSLOT', slot, 'NODE', to.id)
    }
    for (const server of cluster.servers) {
      const deadline = Date.now() + 10_000
      for (;;) {
        const owner = await ownerOf(client(server.port), slot).catch(() => undefined)
        if (owner?.port === to.port) break
        if (Date.now() > deadline) throw new Error(`node ${server.port} does not see slot ${slot} on ${to.port}`)
        await new Promise((r) => setTimeout(r, 20))
      }
    }
  } finally {
    for (const c of clients.values()) c.disconnect()
  }
}

/** A name accepted by `accept` (e.g. "its stream key's slot lies on node X"), drawn from `next`. */
export async function findName(next: () => string, accept: (name: string) => Promise<boolean>, tries = 10_000): Promise<string> {
  for (let i = 0; i < tries; i++) {
    const name = next()
    if (await accept(name)) return name
  }
  throw new Error('no name found')
}
