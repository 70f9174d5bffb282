/**
 * Least privilege (issue 15, item 5): the four roles of the README's
 * "Least-privilege ACL users" are created from exactly the README's lines on a
 * private redis-server; each role's workload runs as its user, and the ACL LOG
 * stays empty. A command outside a role is refused (the users are restricted
 * for real).
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEventManager, newEvent, type EventManager, type EventManagerOptions, type Message } from '../../src/index.js'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { waitFor } from '../support/events.js'

const PASSWORD = randomBytes(12).toString('hex')
/** The README's ACL SETUSER lines, by user name. */
const RULES = new Map(
  readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
    .split('\n')
    .filter((line) => line.startsWith('ACL SETUSER rrs-'))
    .map((line) => [line.split(' ')[2] ?? '', line.replace('>PASSWORD', `>${PASSWORD}`)] as const),
)
/** The promotion add-on for a publisher or consumer that promotes (README). */
const PROMOTER = ['~event:dlq:*', '+zrangebyscore', '+zrange', '+hget']

let server: RedisServer
let admin: Redis

async function setUser(name: string, line: string, extra: readonly string[] = []): Promise<void> {
  const words = line.split(' ').slice(2)
  words[0] = name
  await admin.call('ACL', 'SETUSER', ...words, ...extra)
}

beforeAll(async () => {
  server = await startRedisServer()
  admin = new Redis(server.url)
  expect([...RULES.keys()].sort()).toEqual(['rrs-consumer', 'rrs-dlq-admin', 'rrs-operator', 'rrs-publisher'])
  for (const [name, line] of RULES) await setUser(name, line)
  await setUser('rrs-promoting-publisher', RULES.get('rrs-publisher') ?? '', PROMOTER)
  await setUser('rrs-promoting-consumer', RULES.get('rrs-consumer') ?? '', PROMOTER)
}, 30_000)

afterAll(async () => {
  await admin.quit()
  await server.stop()
})

function as(user: string, options: EventManagerOptions = {}): EventManager {
  return createEventManager({ redisUrl: `redis://${user}:${PASSWORD}@${server.host}:${String(server.port)}`, env: {}, delayedQueueEnabled: false, ...options })
}

/** The ACL LOG entries since the last reset, as `user: command (reason)`. */
async function aclLog(): Promise<string[]> {
  const entries = (await admin.call('ACL', 'LOG')) as unknown[][]
  return entries.map((entry) => {
    const r = new Map<string, unknown>()
    for (let i = 0; i + 1 < entry.length; i += 2) r.set(String(entry[i]), entry[i + 1])
    return `${String(r.get('username'))}: ${String(r.get('object'))} (${String(r.get('reason'))})`
  })
}

describe('least-privilege ACL users', () => {
  it('every role runs its workload with an empty ACL LOG', async () => {
    await admin.call('ACL', 'LOG', 'RESET')
    const topic = randomName('acl')
    const group = randomName('g')

    // Publisher: publish (retry-safe), batch, delayed, cancel, health; no promotion.
    const publisher = as('rrs-publisher')
    await publisher.publish(topic, newEvent('ok', 1))
    await publisher.publish(topic, newEvent('ok', 2))
    await publisher.publishBatch(topic, [newEvent('bad', 3), newEvent('ok', 4)])
    const later = await publisher.publishWithDelay(topic, newEvent('later', 5), 3_600_000)
    await publisher.publishWithDelay(topic, newEvent('cancelled', 6), 3_600_000)
    expect(await publisher.cancelDelayed(topic, later)).toBe(true)
    expect((await publisher.health()).redis.reachable).toBe(true)
    await publisher.close()

    // Publisher without the dedupe window: plain XADD and the batch script.
    const plain = as('rrs-publisher', { publishDedupeWindow: 0 })
    await plain.publish(topic, newEvent('ok', 7))
    await plain.publishBatch(topic, [newEvent('ok', 8), newEvent('ok', 9)])
    await plain.close()

    // A publisher that promotes: the promotion add-on.
    const promoting = as('rrs-promoting-publisher', { delayedQueueEnabled: true, delayedQueueCheckInterval: 100 })
    await promoting.publishWithDelay(topic, newEvent('ok', 10), 50)
    await waitFor(async () => (await admin.zcard(`event:delayed:{${topic}}`)) === 1, 10_000, 'the due event promoted')
    await promoting.close()

    // Consumer: read, ack, nack and redeliver, dead-letter, claim, leases, give-back, remove itself.
    const consumer = as('rrs-consumer', { claimInterval: 100, claimMinIdleTime: 100, maxRetries: 1, retryBackoff: 10 })
    const handled: string[] = []
    let nacked = false
    const sub = consumer.topic(topic).consume({ group, startFrom: 'beginning' }).subscribe((m: Message) => {
      handled.push(m.event.name)
      if (m.event.name === 'bad') void m.deadLetter(new Error('declined'))
      else if (!nacked) {
        nacked = true
        void m.nack(new Error('try again'))
      } else void m.ack()
    })
    await waitFor(() => handled.filter((h) => h === 'ok').length >= 8, 15_000, 'the ok events handled')
    await waitFor(async () => (await admin.xlen(`event:dlq:{${topic}}`)) === 1, 10_000, 'one dead letter')
    const handler = consumer.subscribe(topic, randomName('g2'), () => undefined, { consumer: 'named' })
    await new Promise((r) => setTimeout(r, 400))
    await handler.unsubscribe()
    sub.unsubscribe()
    await consumer.close()

    // Operator: read-only views.
    const operator = as('rrs-operator')
    const stats = await operator.stats()
    expect(stats.topics[topic]?.groups[group]?.pending).toBe(0)
    expect((await operator.stats(topic)).topics[topic]?.deadLetters).toBe(1)
    expect((await operator.health()).redis.reachable).toBe(true)
    const [letter] = await operator.deadLetters.list(topic)
    expect(letter?.error).toBe('declined')
    expect(await operator.deadLetters.get(topic, letter?.dlqId ?? '')).not.toBeNull()
    expect(await operator.backend.listScheduled(topic, { count: 10 })).toHaveLength(1)
    await operator.close()

    // DLQ admin: replay, remove, purge, trim; delayed list, cancel, promote.
    const dlqAdmin = as('rrs-dlq-admin')
    expect(await dlqAdmin.deadLetters.replay(topic, letter?.dlqId ?? '')).not.toBeNull()
    await dlqAdmin.deadLetters.remove(topic, '1-0')
    await dlqAdmin.deadLetters.trimExpired(topic)
    await dlqAdmin.deadLetters.purge(topic)
    const [scheduled] = await dlqAdmin.backend.listScheduled(topic, { count: 10 })
    await dlqAdmin.backend.promoteDue(topic, Date.now(), 100)
    expect(await dlqAdmin.cancelDelayed(topic, scheduled?.eventId ?? '')).toBe(true)
    await dlqAdmin.close()

    expect(await aclLog()).toEqual([])
  }, 90_000)

  it('refuses what a role does not hold (the users are restricted for real)', async () => {
    await admin.call('ACL', 'LOG', 'RESET')
    const topic = randomName('acl-deny')
    const operator = new Redis(`redis://rrs-operator:${PASSWORD}@${server.host}:${String(server.port)}`)
    const publisher = new Redis(`redis://rrs-publisher:${PASSWORD}@${server.host}:${String(server.port)}`)
    try {
      await expect(operator.xadd(`event:stream:{${topic}}`, '*', 'a', '1')).rejects.toThrow(/NOPERM/)
      await expect(publisher.xreadgroup('GROUP', 'g', 'c', 'STREAMS', `event:stream:{${topic}}`, '>')).rejects.toThrow(/NOPERM/)
      await expect(publisher.xadd('other:key', '*', 'a', '1')).rejects.toThrow(/NOPERM/)
      await expect(publisher.zrangebyscore(`event:delayed:{${topic}}`, 0, 1)).rejects.toThrow(/NOPERM/) // no promotion
      expect(await aclLog()).toHaveLength(4)
    } finally {
      operator.disconnect()
      publisher.disconnect()
    }
  })
})
