/**
 * An unreachable Redis fails calls with the connection error (address, cause,
 * no password) instead of "Command timed out", makes itself visible without a
 * logger, and does not hold up close().
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CommandTimeoutError, ConnectionError, newEvent } from '../../src/index.js'
import { freePort, startRedisServer, type RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { testEvents } from '../support/events.js'

/** The error, or the first of its causes, that is a ConnectionError. */
function connectionErrorIn(error: unknown): ConnectionError | undefined {
  for (let e: unknown = error, depth = 0; e !== undefined && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof ConnectionError) return e
  }
  return undefined
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise
  } catch (error) {
    return error
  }
  throw new Error('expected a rejection')
}

// A 30 s command timeout: only a connection error can settle these calls within the test's time.
const COMMAND_TIMEOUT = '30s'

describe('an unreachable Redis', () => {
  let secured: RedisServer
  const password = `pw-${randomName('secret')}`
  beforeAll(async () => {
    secured = await startRedisServer({ password })
  })
  afterAll(async () => {
    await secured.stop()
  })

  it('closed port: calls reject with a ConnectionError naming the address and ECONNREFUSED', async () => {
    const port = await freePort()
    const events = testEvents({ redisUrl: `redis://127.0.0.1:${port}`, commandTimeout: COMMAND_TIMEOUT, logger: quietLogger() })
    const error = await rejection(events.stats())
    expect(error).toBeInstanceOf(ConnectionError)
    expect(error).not.toBeInstanceOf(CommandTimeoutError)
    const connection = error as ConnectionError
    expect(connection.kind).toBe('connection')
    expect(connection.address).toBe(`127.0.0.1:${port}`)
    expect(connection.message).toContain(`127.0.0.1:${port}`)
    expect(connection.message).toMatch(/ECONNREFUSED/)
    // A publish carries it too (as the cause of its own error class, when the library wraps it).
    const published = await rejection(events.publish(randomName('t'), newEvent('x', {})))
    expect(connectionErrorIn(published)?.message).toMatch(/ECONNREFUSED/)
  })

  it('unknown host: the connection error names the host and ENOTFOUND', async () => {
    const events = testEvents({ redisUrl: 'redis://no-such-host.invalid:6379', commandTimeout: COMMAND_TIMEOUT, logger: quietLogger() })
    const error = await rejection(events.stats())
    expect(error).toBeInstanceOf(ConnectionError)
    expect((error as Error).message).toMatch(/no-such-host\.invalid/)
    expect((error as Error).message).toMatch(/ENOTFOUND|EAI_AGAIN/)
  })

  it('wrong password: a ConnectionError that says authentication failed and never shows the password', async () => {
    const wrong = `wrong-${randomName('pw')}`
    const events = testEvents({ redisUrl: `redis://:${wrong}@127.0.0.1:${secured.port}`, commandTimeout: COMMAND_TIMEOUT, logger: quietLogger() })
    const error = await rejection(events.stats())
    expect(error).toBeInstanceOf(ConnectionError)
    const text = `${String(error)} ${(error as Error).stack ?? ''} ${JSON.stringify(error, Object.getOwnPropertyNames(error))}`
    expect(text).toMatch(/WRONGPASS|authentication failed/)
    expect(text).not.toContain(wrong)
    expect(text).not.toContain(password)
  })

  it('pending calls reject with the connection error and close() does not wait for Redis', async () => {
    const port = await freePort()
    const events = testEvents({ redisUrl: `redis://127.0.0.1:${port}`, commandTimeout: COMMAND_TIMEOUT, logger: quietLogger() })
    const calls = [events.stats(), events.deadLetters.count(randomName('t')), events.cancelDelayed(randomName('t'), 'x')]
    const errors = await Promise.all(calls.map(rejection))
    for (const e of errors) expect(connectionErrorIn(e)).toBeDefined()
    await events.close() // resolves (the 30 s timeout would fail the test)
    expect(events.closed).toBe(true)
  })

  it('health() is not ok and gives the connection error as the reason', async () => {
    const port = await freePort()
    const events = testEvents({ redisUrl: `redis://127.0.0.1:${port}`, commandTimeout: COMMAND_TIMEOUT, healthTimeout: 20_000, logger: quietLogger() })
    const report = await events.health()
    expect(report.ok).toBe(false)
    expect(report.reasons.join('\n')).toMatch(/ECONNREFUSED/)
    expect(report.reasons.join('\n')).toContain(`127.0.0.1:${port}`)
  })

  it('without a logger, a lost connection is reported through process.emitWarning (once)', async () => {
    const port = await freePort()
    const warnings: Error[] = []
    const onWarning = (w: Error): void => {
      if ((w as { code?: string }).code === 'RRS_REDIS_UNREACHABLE') warnings.push(w)
    }
    process.on('warning', onWarning)
    try {
      const events = testEvents({ redisUrl: `redis://127.0.0.1:${port}`, commandTimeout: COMMAND_TIMEOUT })
      await rejection(events.stats())
      await rejection(events.stats())
      await new Promise((r) => setImmediate(r))
      expect(warnings.length).toBe(1)
      expect(warnings[0]?.message).toMatch(new RegExp(`ECONNREFUSED 127\\.0\\.0\\.1:${port}`))
    } finally {
      process.off('warning', onWarning)
    }
  })

  it('with a logger, the warning goes to logger.warn', async () => {
    const port = await freePort()
    const lines: string[] = []
    const events = testEvents({ redisUrl: `redis://127.0.0.1:${port}`, commandTimeout: COMMAND_TIMEOUT, logger: quietLogger(lines) })
    await rejection(events.stats())
    expect(lines.some((l) => /Redis connection failed: .*ECONNREFUSED/.test(l))).toBe(true)
  })
})

/** A pino-compatible logger that records warn messages. */
function quietLogger(lines: string[] = []): import('../../src/index.js').Logger {
  const logger = {
    level: 'warn',
    trace: () => undefined,
    debug: () => undefined,
    info: () => undefined,
    warn: (obj: unknown, msg?: string) => void lines.push(typeof obj === 'string' ? obj : (msg ?? '')),
    error: (obj: unknown, msg?: string) => void lines.push(typeof obj === 'string' ? obj : (msg ?? '')),
    fatal: () => undefined,
    child: () => logger,
  }
  return logger as unknown as import('../../src/index.js').Logger
}
