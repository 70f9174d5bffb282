import { Writable } from 'node:stream'
import { inspect } from 'node:util'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ConnectionError, createLogger, newEvent, type Event } from '../../src/index.js'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

/** A pino destination that keeps every line. */
function memoryStream(): { stream: Writable; lines: string[]; records: () => Record<string, unknown>[] } {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l.length > 0))
      callback()
    },
  })
  return { stream, lines, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) }
}

const PASSWORD = 's3cr3t-Pa55w0rd'
const WRONG_PASSWORD = 'wr0ng-Pa55w0rd'

describe('logging never shows a password', () => {
  let server: RedisServer
  beforeAll(async () => {
    server = await startRedisServer({ password: PASSWORD })
  })
  afterAll(async () => {
    await server.stop()
  })

  it('with any pino logger: config, URLs, errors and failed connections are redacted', async () => {
    const { stream, lines } = memoryStream()
    const logger = pino({ level: 'trace' }, stream)
    const url = server.url
    expect(url).toContain(PASSWORD)
    const events = testEvents({ redisUrl: url, logger, maxRetries: 0 })
    const topic = randomName('log')
    await events.publish(topic, newEvent('x', { n: 1 }))
    let handled = 0
    const sub = events.subscribe(topic, randomName('g'), () => {
      handled++
      throw new Error(`cannot reach ${url}`)
    })
    await waitFor(() => handled === 1)
    await waitFor(async () => (await events.deadLetters.count(topic)) === 1)
    // What a careless caller might log through the manager's logger.
    events.logger.info({ config: events.config, url, options: { redisUrl: url, redisPassword: PASSWORD } }, 'careless')
    events.logger.error({ err: new Error(`AUTH failed for redis://default:${PASSWORD}@cache:6379`) }, 'careless error')
    await sub.unsubscribe()

    // A manager with a wrong password: a failing command rejects, and a consumer's Observable errors
    // (a wrong password is a permanent failure: no retrying) with a typed error that is logged.
    const wrongUrl = url.replace(encodeURIComponent(PASSWORD), WRONG_PASSWORD)
    const wrong = testEvents({ redisUrl: wrongUrl, logger })
    await expect(wrong.deadLetters.count(topic)).rejects.toThrow(/WRONGPASS|NOAUTH|authentication/i)
    const failures: unknown[] = []
    const failing = wrong.consume(topic, { group: randomName('g'), drainTimeout: 50 }).subscribe({ error: (e: unknown) => void failures.push(e) })
    await waitFor(() => failures.length > 0, 20_000, 'the consumer to error')
    expect(failing.closed).toBe(true)
    const [failure] = failures
    expect(failure).toBeInstanceOf(ConnectionError)
    expect((failure as ConnectionError).message).toMatch(/WRONGPASS|NOAUTH|authentication/i)
    for (const text of [String(failure), (failure as Error).stack ?? '', inspect(failure, { depth: 5 }), JSON.stringify(failure)]) {
      expect(text).not.toContain(PASSWORD)
      expect(text).not.toContain(encodeURIComponent(PASSWORD))
      expect(text).not.toContain(WRONG_PASSWORD)
    }
    await waitFor(() => lines.some((l) => l.includes('"subscription failed"') && /WRONGPASS|NOAUTH|authentication/i.test(l)), 10_000, 'the failure to be logged')
    await wrong.close()

    expect(lines.length).toBeGreaterThan(3)
    expect(lines.some((l) => l.includes('"event manager created"'))).toBe(true)
    expect(lines.some((l) => l.includes('"careless"') && l.includes('***'))).toBe(true)
    for (const line of lines) {
      expect(line).not.toContain(PASSWORD)
      expect(line).not.toContain(encodeURIComponent(PASSWORD))
      expect(line).not.toContain(WRONG_PASSWORD)
    }
  })

  it('createLogger() masks URL credentials and given secrets anywhere in a line', () => {
    const { stream, records, lines } = memoryStream()
    const logger = createLogger({ level: 'debug', destination: stream, secrets: ['tok3n-XYZ'] })
    logger.info(`connecting to redis://app:${PASSWORD}@cache:6379/0 with tok3n-XYZ`)
    logger.debug({ nested: { deep: { text: `rediss://:${PASSWORD}@h:6380` } }, password: PASSWORD }, 'fields')
    logger.error({ err: new Error(`boom redis://u:${PASSWORD}@h`) }, 'error')
    expect(lines).toHaveLength(3)
    for (const line of lines) {
      expect(line).not.toContain(PASSWORD)
      expect(line).not.toContain('tok3n-XYZ')
    }
    const [first, second, third] = records()
    expect(first!['msg']).toBe('connecting to redis://app:***@cache:6379/0 with ***')
    expect(second!['password']).toBe('***')
    expect(((third!['err'] as Record<string, unknown>)['message'] as string)).toBe('boom redis://u:***@h')
  })
})

describe('log lines about a message', () => {
  it('carry topic, group, consumer, streamId, eventId and correlationId', async () => {
    const { stream, records } = memoryStream()
    const events = testEvents({ logger: pino({ level: 'debug' }, stream), maxRetries: 1, retryBackoff: '10ms' })
    const topic = randomName('log')
    const group = randomName('g')
    const [streamId] = await events.publishBatch(topic, [newEvent('flaky', {}, { correlationId: 'corr-1' })])
    let calls = 0
    let settled = 0
    const sub = events.subscribe(
      topic,
      group,
      () => {
        if (calls++ === 0) throw new Error('first attempt fails')
      },
      { consumer: 'worker-1', retry: { maxRetries: 1, initialDelay: 10, jitter: 0 }, onSettled: () => settled++ },
    )
    await waitFor(() => settled === 1)
    await sub.unsubscribe()
    const aboutMessage = records().filter((r) => r['msg'] === 'handler failed' || r['msg'] === 'handled')
    expect(aboutMessage.map((r) => r['msg'])).toEqual(['handler failed', 'handled'])
    for (const r of aboutMessage) {
      expect(r).toMatchObject({ topic, group, consumer: 'worker-1', streamId, correlationId: 'corr-1', eventId: expect.any(String) as string })
    }
    expect(aboutMessage[0]).toMatchObject({ level: 40, attempt: 1, err: { message: 'first attempt fails' } })
    expect(aboutMessage[1]).toMatchObject({ outcome: 'acked', attempts: 2 })
    // Every line that names a stream entry also names where it lives.
    for (const r of records().filter((x) => 'streamId' in x)) expect(r).toMatchObject({ topic, group, consumer: 'worker-1' })
  })
})

describe('correlation', () => {
  it('events published while handling an event inherit its correlation id, across a saga of topics', async () => {
    const events = testEvents()
    const [orders, inventory, payments, done] = ['orders', 'inventory', 'payments', 'done'].map((t) => randomName(t)) as [string, string, string, string]
    const finished: Event[] = []
    const subs = [
      events.subscribe(orders, 'saga', async (msg) => {
        await events.publish(inventory, newEvent('inventory.reserve', msg.event.payload))
        await events.publish(payments, newEvent('payment.charge', msg.event.payload))
      }),
      events.subscribe(inventory, 'stock', async (msg) => {
        await events.publish(done, newEvent('inventory.reserved', msg.event.payload))
      }),
      events.subscribe(payments, 'billing', async (msg) => {
        // Asynchronous depth does not lose the context.
        await new Promise((r) => setTimeout(r, 5))
        await Promise.resolve().then(() => events.publish(done, newEvent('payment.charged', msg.event.payload)))
      }),
      events.subscribe(done, 'tracker', (msg) => void finished.push(msg.event)),
    ]
    const order = newEvent('order.placed', { orderId: 1 })
    const explicit = newEvent('order.placed', { orderId: 2 }, { correlationId: 'checkout-42' })
    await events.publish(orders, order)
    await events.publish(orders, explicit)
    await waitFor(() => finished.length === 4)
    const byOrder = (id: number): (string | undefined)[] =>
      finished.filter((e) => (e.payload as { orderId: number }).orderId === id).map((e) => e.correlationId)
    expect(byOrder(1)).toEqual([order.id, order.id])
    expect(byOrder(2)).toEqual(['checkout-42', 'checkout-42'])
    // Outside any handler nothing is inherited.
    const outside = randomName('outside')
    await events.publish(outside, newEvent('x', {}))
    expect((await events.deadLetters.count(outside)) === 0).toBe(true)
    await Promise.all(subs.map((s) => s.unsubscribe()))
  })
})
