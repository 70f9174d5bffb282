/**
 * health() on a consumer that can never read (issue 15, item 2): a user that
 * may not XREADGROUP ends the subscription `errored`, and health() is not ok
 * and says why; it is never reported `pulling`.
 */
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { newEvent } from '../../src/index.js'
import { randomName, redisUrl } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

let redis: Redis
const user = randomName('noread')
const password = randomName('pw')
beforeAll(async () => {
  redis = new Redis(redisUrl())
  await redis.call('ACL', 'SETUSER', user, 'reset', 'on', `>${password}`, '~*', '&*', '+@all', '-xreadgroup')
})
afterAll(async () => {
  await redis.call('ACL', 'DELUSER', user)
  await redis.quit()
})

describe('health() of a consumer that cannot read', () => {
  it('an errored subscription (NOPERM on XREADGROUP) makes health() not ok, with the error; it never says pulling', async () => {
    const url = new URL(redisUrl())
    url.username = user
    url.password = password
    const events = testEvents({ redisUrl: url.toString() })
    const topic = randomName('wiring-health')
    await events.publish(topic, newEvent('x', 1))
    const states = new Set<string>()
    let failure: unknown
    events
      .topic(topic)
      .consume({ group: randomName('g'), drainTimeout: 50 })
      .subscribe({ error: (e: unknown) => (failure = e) })
    await waitFor(
      async () => {
        const report = await events.health()
        for (const s of report.subscriptions) states.add(s.state)
        return report.subscriptions.some((s) => s.state === 'errored')
      },
      10_000,
      'the subscription to fail',
    )
    expect(failure).toBeDefined()
    const report = await events.health()
    expect(report.ok).toBe(false)
    expect(report.reasons.join('\n')).toMatch(/^subscription .+ failed: .*NOPERM/m)
    expect(report.subscriptions.find((s) => s.state === 'errored')?.error).toMatch(/NOPERM/)
    expect(states.has('pulling')).toBe(false)
  })
})
