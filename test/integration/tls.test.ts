/**
 * TLS with a private CA against a TLS-only redis-server that requires client
 * certificates (mutual TLS), with certificates made by openssl here.
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConnectionError, newEvent, type EventManager } from '../../src/index.js'
import { makeTestCertificates, startRedisServer, type RedisServer, type TestCertificates } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

let certs: TestCertificates
let server: RedisServer

beforeAll(async () => {
  certs = await makeTestCertificates()
  server = await startRedisServer({ tls: { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile, caFile: certs.caFile, authClients: 'yes' } })
})
afterAll(async () => {
  await server.stop()
  await certs.cleanup()
})

/** Publishes `n` events and resolves once a subscription handled all of them. */
async function roundTrip(events: EventManager, n: number): Promise<number> {
  const topic = randomName('tls')
  let handled = 0
  const sub = events.subscribe(topic, randomName('g'), () => {
    handled++
  }, { startFrom: 'beginning' })
  try {
    for (let i = 0; i < n; i++) await events.publish(topic, newEvent('e', { i }))
    await waitFor(() => handled >= n, 20_000, `${n} events handled over TLS`)
  } finally {
    await sub.unsubscribe()
  }
  return handled
}

describe('TLS with a private CA', () => {
  it('EVENT_REDIS_TLS_CA (a path), _CERT and _KEY (PEM): publish, consume (blocking reader) and health all work', async () => {
    const events = testEvents({
      env: {
        EVENT_REDIS_URL: `rediss://127.0.0.1:${server.port}`,
        EVENT_REDIS_TLS_CA: certs.caFile,
        EVENT_REDIS_TLS_CERT: certs.clientCertPem,
        EVENT_REDIS_TLS_KEY: certs.clientKeyPem,
      },
      redisUrl: undefined,
    })
    expect(events.config.redis.tls).toBe(true)
    expect(await roundTrip(events, 12)).toBe(12)
    expect((await events.health()).ok).toBe(true)
  })

  it('the options object with a server name, and redis:// plus TLS options turns TLS on', async () => {
    const events = testEvents({
      redisUrl: `redis://127.0.0.1:${server.port}`,
      redisTlsCa: certs.caPem,
      redisTlsCert: certs.clientCertPem,
      redisTlsKey: certs.clientKeyPem,
      redisTlsServername: 'localhost',
    })
    expect(await roundTrip(events, 3)).toBe(3)
  })

  it('a wrong CA fails with a ConnectionError that names the certificate problem', async () => {
    const events = testEvents({
      redisUrl: `rediss://127.0.0.1:${server.port}`,
      redisTlsCa: certs.otherCaPem,
      redisTlsCert: certs.clientCertPem,
      redisTlsKey: certs.clientKeyPem,
      commandTimeout: '30s',
    })
    let error: unknown
    try {
      await events.stats()
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(ConnectionError)
    expect((error as Error).message).toMatch(/certificate/i)
    expect((error as Error).message).toMatch(/TLS certificate problem/)
    expect((error as Error).message).toContain(`127.0.0.1:${server.port}`)
    const report = await events.health({ timeoutMs: 20_000 })
    expect(report.ok).toBe(false)
    expect(report.reasons.join('\n')).toMatch(/certificate/i)
  })

  it('a user-supplied redisClient configured for TLS: every connection is its duplicate, and consumption works', async () => {
    const client = new Redis({
      host: '127.0.0.1',
      port: server.port,
      tls: { ca: certs.caPem, cert: certs.clientCertPem, key: certs.clientKeyPem },
      maxRetriesPerRequest: 3,
    })
    try {
      // The EVENT_* location points nowhere: nothing may be built from it.
      const events = testEvents({ redisClient: client, env: { EVENT_REDIS_URL: 'redis://127.0.0.1:1' }, redisUrl: undefined, healthTimeout: 5_000 })
      expect(await roundTrip(events, 24)).toBe(24)
      const report = await events.health()
      expect(report.ok).toBe(true)
      await events.close()
      expect(client.status).toBe('ready') // the user's client is not closed
    } finally {
      client.disconnect()
    }
  })
})
