/**
 * The README's "Windows and joins" block, verbatim below (between the
 * BEGIN/END markers, the import line aside: in this checkout the package is
 * its sources), run against Redis with orders and payments that arrive out of
 * order across the two topics: payments are read up to 2 minutes (event time)
 * ahead of the orders they pay. The first test checks the block is still the
 * README's text.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import * as t from 'io-ts'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { newEvent, type EventManager, type Message } from '../../src/index.js'
import { windowTumbling, reduceWindow, joinWithin, handleEach, decode } from '../../operators/index.js'
import { randomName, redisUrl } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

type Saved = (key: string, windowStart: number, count: number) => Promise<void>
type OrderHandler = (order: Message<{ readonly orderId: string }>) => Promise<void>

function readmeBlock(events: EventManager, saveCount: Saved, markPaid: OrderHandler, remind: OrderHandler): void {
// BEGIN README
// per-minute order counts per user
events.topic('orders').consume({ group: 'counts' }).pipe(
  windowTumbling(60_000, { key: (m) => m.event.headers['userId'] ?? '', grace: 5_000, idleTimeout: 10_000 }),
  reduceWindow((n) => n + 1, 0),
  handleEach((result) => saveCount(result.key, result.start, result.value)),
).subscribe()

// orders joined with their payments within 5 minutes; unpaid orders come out with right: undefined
const Order = t.type({ orderId: t.string }), Payment = t.type({ orderId: t.string })
const payments$ = events.topic('payments').consume({ group: 'order-payments' }).pipe(decode(Payment))
events.topic('orders').consume({ group: 'order-payments' }).pipe(
  decode(Order),
  joinWithin(payments$, { leftKey: (o) => o.event.payload.orderId, rightKey: (p) => p.event.payload.orderId, within: 5 * 60_000, type: 'left', idleTimeout: 60_000 }),
  handleEach((pair) => (pair.right ? markPaid(pair.left) : remind(pair.left))),
).subscribe()
// END README
}

/** The README block's text without its import line. */
function readmeText(): string {
  const readme = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8')
  const section = readme.slice(readme.indexOf('### Windows and joins'))
  const block = /```ts\n([\s\S]*?)```/.exec(section)?.[1] ?? ''
  return block.replace(/^import [^\n]*\n\n?/, '')
}

function ownBlockText(): string {
  const source = readFileSync(fileURLToPath(import.meta.url), 'utf8')
  return source.slice(source.indexOf('// BEGIN README\n') + '// BEGIN README\n'.length, source.indexOf('// END README\n'))
}

const MINUTE = 60_000
/** 2024-01-15 12:00 UTC, on a minute boundary. */
const BASE = Date.UTC(2024, 0, 15, 12, 0, 0)

let redis: Redis
beforeAll(() => {
  redis = new Redis(redisUrl())
})
afterAll(async () => {
  await redis.quit()
})

/** The last id the group delivered (XINFO GROUPS). */
async function lastDelivered(stream: string, group: string): Promise<string | undefined> {
  const groups = (await redis.xinfo('GROUPS', stream).catch(() => [])) as unknown[][]
  for (const fields of groups) {
    const info = new Map<string, unknown>()
    for (let i = 0; i + 1 < fields.length; i += 2) info.set(String(fields[i]), fields[i + 1])
    if (info.get('name') === group) return String(info.get('last-delivered-id'))
  }
  return undefined
}

describe('the README windows and joins example', () => {
  it('is the README block, verbatim', () => {
    expect(ownBlockText()).toBe(readmeText())
  })

  it('gives the right counts and pairs on Redis when payments are read up to 2 minutes ahead of their orders', async () => {
    const prefix = `${randomName('readme')}:`
    const events = testEvents({ keyPrefix: prefix })
    const counts: string[] = []
    const paid: string[] = []
    const reminded: string[] = []
    readmeBlock(
      events,
      (key, start, count) => {
        counts.push(`${key} +${(start - BASE) / MINUTE}m: ${count}`)
        return Promise.resolve()
      },
      (order) => {
        paid.push(order.event.payload.orderId)
        return Promise.resolve()
      },
      (order) => {
        reminded.push(order.event.payload.orderId)
        return Promise.resolve()
      },
    )
    const order = (orderId: string, userId: string, minutes: number) =>
      ['orders', newEvent('order.placed', { orderId }, { timestamp: BASE + minutes * MINUTE, headers: { userId } })] as const
    const payment = (orderId: string, minutes: number) => ['payments', newEvent('payment.received', { orderId }, { timestamp: BASE + minutes * MINUTE })] as const
    // The order in which the join's two subscriptions receive them: each payment before the order it pays,
    // the payments topic up to 2 minutes of event time ahead of the orders topic.
    const arrivals = [
      payment('o1', 1),
      payment('o3', 2),
      order('o1', 'u1', 0),
      order('o2', 'u2', 0.5),
      payment('o2', 2.3),
      order('o7', 'u1', 0.8),
      payment('o7', 2.6),
      order('o3', 'u1', 1.2),
      payment('o4', 3),
      order('o4', 'u1', 2.5),
      order('o5', 'u2', 3), // never paid
      order('o6', 'u1', 4), // never paid
      order('of', 'u9', 60), // an hour later: every earlier window and join buffer closes
      payment('of', 60),
    ]
    for (const [topic, event] of arrivals) {
      const id = await events.publish(topic, event)
      const stream = `${prefix}stream:{${topic}}`
      await waitFor(async () => (await lastDelivered(stream, 'order-payments')) === id, 10_000, `${topic} ${id} to reach the join`)
    }
    await waitFor(() => paid.length === 6 && reminded.length === 2 && counts.length === 6, 15_000, 'every result')
    expect(paid.sort()).toEqual(['o1', 'o2', 'o3', 'o4', 'o7', 'of'])
    expect(reminded.sort()).toEqual(['o5', 'o6'])
    expect(counts.sort()).toEqual(['u1 +0m: 2', 'u1 +1m: 1', 'u1 +2m: 1', 'u1 +4m: 1', 'u2 +0m: 1', 'u2 +3m: 1'])
    expect(await events.deadLetters.count('orders')).toBe(0)
    expect(await events.deadLetters.count('payments')).toBe(0)
  })
})
