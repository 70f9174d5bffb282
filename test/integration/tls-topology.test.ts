/**
 * TLS settings reach every connection through Sentinel and Cluster (issue #15
 * item 1): a TLS-only Sentinel group (data nodes, replication and sentinels
 * on TLS ports only) and a TLS-only Cluster (`tls-cluster yes`), certificates
 * made here with openssl; every node and sentinel requires a client
 * certificate (mutual TLS). Publishing, consuming (the blocking reader) and
 * health() work with EVENT_REDIS_TLS_CA; a wrong CA fails fast with an error
 * naming the certificate problem.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConnectionError, createEventManager, newEvent, type EventManager } from '../../src/index.js'
import { makeTestCertificates, type TestCertificates } from '../support/redis-server.js'
import { startTlsCluster, startTlsSentinelGroup, type TlsCluster, type TlsSentinelGroup } from '../support/tls-topology.js'
import { randomName } from '../support/redis.js'
import { waitFor } from '../support/events.js'
import { capturingLogger } from '../support/logger.js'

let certs: TestCertificates
beforeAll(async () => {
  certs = await makeTestCertificates()
})
afterAll(async () => {
  await certs.cleanup()
})

/** Every node requires a client certificate (`tls-auth-clients yes`): the client's, for every connection. */
const mutual = (): Record<string, string> => ({ EVENT_REDIS_TLS_CERT: certs.clientCertPem, EVENT_REDIS_TLS_KEY: certs.clientKeyPem })

/** Publishes `n` events to each topic and resolves once subscriptions handled all of them. */
async function roundTrip(events: EventManager, topics: readonly string[], n: number): Promise<number> {
  let handled = 0
  const subs = topics.map((topic) => events.subscribe(topic, randomName('g'), () => {
    handled++
  }, { startFrom: 'beginning', blockMs: 200 }))
  try {
    for (const topic of topics) {
      for (let i = 0; i < n; i++) await events.publish(topic, newEvent('e', { i }))
      await events.publishBatch(topic, [newEvent('b', 1), newEvent('b', 2)])
    }
    await waitFor(() => handled >= topics.length * (n + 2), 20_000, 'every event handled over TLS')
  } finally {
    await Promise.all(subs.map((s) => s.unsubscribe()))
  }
  return handled
}

/** The first call's rejection and how long it took. */
async function firstFailure(events: EventManager): Promise<{ error: unknown; ms: number }> {
  const started = Date.now()
  try {
    await events.stats()
    return { error: undefined, ms: Date.now() - started }
  } catch (error) {
    return { error, ms: Date.now() - started }
  }
}

describe('TLS through Sentinel (TLS-only sentinels, master and replica)', () => {
  let group: TlsSentinelGroup
  beforeAll(async () => {
    group = await startTlsSentinelGroup(certs, { replicas: 1, sentinels: 3 })
  }, 60_000)
  afterAll(async () => {
    await group.stop()
  })

  it('EVENT_REDIS_TLS_CA: publish, consume and health() work; the sentinels and the master are reached over TLS', async () => {
    const events = createEventManager({
      env: { EVENT_REDIS_HOSTS: group.hosts, EVENT_REDIS_MASTER_NAME: group.masterName, ...mutual(), EVENT_REDIS_TLS_CA: certs.caFile },
      commandTimeout: 10_000,
    })
    try {
      expect(events.config.redis.mode).toBe('sentinel')
      expect(events.config.redis.tls).toBe(true)
      expect(await roundTrip(events, [randomName('tls-s')], 10)).toBe(12)
      const report = await events.health()
      expect(report.ok, report.reasons.join('\n')).toBe(true)
    } finally {
      await events.close()
    }
  }, 40_000)

  it('a wrong CA fails fast with a ConnectionError naming the certificate problem', async () => {
    const { logger, lines } = capturingLogger()
    const events = createEventManager({
      env: { EVENT_REDIS_HOSTS: group.hosts, EVENT_REDIS_MASTER_NAME: group.masterName, ...mutual(), EVENT_REDIS_TLS_CA: certs.otherCaPem },
      commandTimeout: 20_000,
      logger,
    })
    try {
      const { error, ms } = await firstFailure(events)
      console.log(`[tls-topology] sentinel wrong CA: ${ms} ms: ${(error as Error | undefined)?.message ?? 'no error'}`)
      expect(error).toBeInstanceOf(ConnectionError)
      expect((error as Error).message).toMatch(/TLS certificate problem/)
      expect(ms).toBeLessThan(5_000)
      // The connection warning names it too (ioredis' own error is only a summary).
      await waitFor(() => lines.some((l) => l.includes('Redis connection failed')), 5_000, 'the connection warning')
      expect(lines.find((l) => l.includes('Redis connection failed'))).toMatch(/TLS certificate problem SELF_SIGNED_CERT_IN_CHAIN/)
    } finally {
      await events.close()
    }
  }, 40_000)
})

describe('TLS through Cluster (tls-cluster yes, TLS ports only)', () => {
  let cluster: TlsCluster
  beforeAll(async () => {
    cluster = await startTlsCluster(certs, 3)
  }, 60_000)
  afterAll(async () => {
    await cluster.stop()
  })

  it('EVENT_REDIS_TLS_CA: publish and consume on topics of every node, health() ok', async () => {
    const events = createEventManager({
      env: { EVENT_REDIS_HOSTS: cluster.nodes.map((n) => `${n.host}:${n.port}`).join(','), ...mutual(), EVENT_REDIS_TLS_CA: certs.caFile },
      commandTimeout: 10_000,
    })
    try {
      expect(events.config.redis.mode).toBe('cluster')
      expect(events.config.redis.tls).toBe(true)
      const topics = Array.from({ length: 6 }, () => randomName('tls-c'))
      expect(await roundTrip(events, topics, 5)).toBe(topics.length * 7)
      const report = await events.health()
      expect(report.ok, report.reasons.join('\n')).toBe(true)
    } finally {
      await events.close()
    }
  }, 40_000)

  it('a wrong CA fails fast with a ConnectionError naming the certificate problem', async () => {
    const { logger, lines } = capturingLogger()
    const events = createEventManager({
      env: { EVENT_REDIS_HOSTS: cluster.nodes.map((n) => `${n.host}:${n.port}`).join(','), ...mutual(), EVENT_REDIS_TLS_CA: certs.otherCaPem },
      commandTimeout: 20_000,
      logger,
    })
    try {
      const { error, ms } = await firstFailure(events)
      console.log(`[tls-topology] cluster wrong CA: ${ms} ms: ${(error as Error | undefined)?.message ?? 'no error'}`)
      expect(error).toBeInstanceOf(ConnectionError)
      expect((error as Error).message).toMatch(/TLS certificate problem/)
      expect(ms).toBeLessThan(5_000)
      // The connection warning names it too (ioredis' own error is only a summary).
      await waitFor(() => lines.some((l) => l.includes('Redis connection failed')), 5_000, 'the connection warning')
      expect(lines.find((l) => l.includes('Redis connection failed'))).toMatch(/TLS certificate problem SELF_SIGNED_CERT_IN_CHAIN/)
    } finally {
      await events.close()
    }
  }, 40_000)
})
