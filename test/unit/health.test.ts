import { describe, expect, it } from 'vitest'
import type { StreamBackend } from '../../src/backend/types.js'
import type { SubscriptionStatus } from '../../src/consumer/subscription.js'
import { checkHealth, UnhealthyError, type HealthSource, type PromoterHealth } from '../../src/index.js'

function source(ping: () => Promise<number>, parts: { subscriptions?: SubscriptionStatus[]; promoters?: PromoterHealth[]; closed?: boolean } = {}): HealthSource {
  return {
    backend: { kind: 'redis', ping } as unknown as StreamBackend,
    closed: parts.closed ?? false,
    promoterIntervalMs: 1_000,
    subscriptions: () => parts.subscriptions ?? [],
    promoters: () => parts.promoters ?? [],
  }
}

const status = (state: SubscriptionStatus['state'], lastReadAt: number | null = Date.now()): SubscriptionStatus => ({
  topic: 'orders',
  group: 'billing',
  consumer: 'c1',
  state,
  held: 3,
  lastReadAt,
  claimerAlive: true,
})

describe('checkHealth', () => {
  it('is ok with the round trip when the store answers', async () => {
    const report = await checkHealth(source(() => Promise.resolve(1.23456)), { timeoutMs: 100 })
    expect(report).toMatchObject({ ok: true, reasons: [], redis: { kind: 'redis', reachable: true, latencyMs: 1.235 }, subscriptions: [], promoters: [] })
  })

  it('never hangs: a PING that never answers is reported after the timeout', async () => {
    const started = Date.now()
    const report = await checkHealth(source(() => new Promise<number>(() => undefined)), { timeoutMs: 50 })
    expect(Date.now() - started).toBeLessThan(1_000)
    expect(report.ok).toBe(false)
    expect(report.redis).toEqual({ kind: 'redis', reachable: false, latencyMs: null, error: 'no answer to PING within 50 ms' })
    expect(report.reasons).toEqual(['Redis is unreachable: no answer to PING within 50 ms'])
  })

  it('reports a failing PING, and a late rejection is not unhandled', async () => {
    const report = await checkHealth(source(() => Promise.reject(new Error('ECONNREFUSED'))), { timeoutMs: 50 })
    expect(report.reasons).toEqual(['Redis is unreachable: ECONNREFUSED'])
    const late = await checkHealth(source(() => new Promise<number>((_, reject) => setTimeout(() => reject(new Error('late')), 80))), { timeoutMs: 10 })
    expect(late.ok).toBe(false)
    await new Promise((r) => setTimeout(r, 120)) // vitest fails the run on an unhandled rejection
  })

  it('lists subscriptions with their state and last read; a reconnecting one is a reason', async () => {
    const now = Date.now()
    const report = await checkHealth(source(() => Promise.resolve(1), { subscriptions: [status('paused', now - 500), status('reconnecting', null)] }))
    expect(report.subscriptions[0]).toMatchObject({ state: 'paused', held: 3, lastReadAt: now - 500, claimerAlive: true })
    expect(report.subscriptions[0]!.lastReadAgoMs).toBeGreaterThanOrEqual(500)
    expect(report.subscriptions[1]).toMatchObject({ state: 'reconnecting', lastReadAt: null, lastReadAgoMs: null })
    expect(report.ok).toBe(false)
    expect(report.reasons).toEqual(['subscription orders/billing (consumer c1) is reconnecting'])
  })

  it('an errored or stalled subscription makes it not ok, with the reason; credit and error are reported', async () => {
    const errored: SubscriptionStatus = { ...status('errored'), credit: 12, error: 'MalformedPayloadError: entry 1-0 cannot be decoded' }
    const report = await checkHealth(source(() => Promise.resolve(1), { subscriptions: [errored, status('stalled'), status('pulling'), status('starting', null)] }))
    expect(report.ok).toBe(false)
    expect(report.reasons).toEqual([
      'subscription orders/billing (consumer c1) failed: MalformedPayloadError: entry 1-0 cannot be decoded',
      'subscription orders/billing (consumer c1) is stalled: a read has not returned for far longer than its block time',
    ])
    expect(report.subscriptions[0]).toMatchObject({ state: 'errored', credit: 12, error: 'MalformedPayloadError: entry 1-0 cannot be decoded' })
    expect(report.subscriptions[2]).not.toHaveProperty('error')
  })

  it('reports a stopped or stuck promoter, and a closed manager', async () => {
    const stuck = await checkHealth(
      source(() => Promise.resolve(1), {
        promoters: [
          { topic: 'a', alive: true, lastRunAt: Date.now() },
          { topic: 'b', alive: true, lastRunAt: Date.now() - 120_000 },
          { topic: 'c', alive: false, lastRunAt: null },
        ],
      }),
    )
    expect(stuck.reasons).toEqual(['the delayed-event promoter of b has not completed a pass for 120 s', 'the delayed-event promoter of c stopped'])
    const closed = await checkHealth(source(() => Promise.resolve(1), { closed: true }))
    expect(closed).toMatchObject({ ok: false, reasons: ['the event manager is closed'], redis: { reachable: false } })
    const error = new UnhealthyError(closed)
    expect(error.message).toBe('event system unhealthy: the event manager is closed')
    expect(error.report).toBe(closed)
  })
})
