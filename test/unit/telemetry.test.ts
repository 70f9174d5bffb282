import { Writable } from 'node:stream'
import { pino } from 'pino'
import { describe, expect, it } from 'vitest'
import {
  createEventManager,
  createLogger,
  formatTraceparent,
  isTracingEnabled,
  messageLogFields,
  newEvent,
  parseTraceparent,
  redactingLogger,
  scrubText,
  traceContextHook,
  withSendSpan,
  type Message,
  type StoredEvent,
} from '../../src/index.js'

describe('traceparent', () => {
  it('parses and formats W3C trace context', () => {
    const header = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'
    const context = parseTraceparent(header)
    expect(context).toEqual({ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1, isRemote: true })
    expect(formatTraceparent(context!)).toBe(header)
    expect(parseTraceparent('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra')?.traceFlags).toBe(0)
  })

  it('refuses malformed and invalid headers', () => {
    for (const bad of [undefined, '', 'nonsense', 'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', '00-00000000000000000000000000000000-b7ad6b7169203331-01', '00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01', '00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01']) {
      expect(parseTraceparent(bad)).toBeUndefined()
    }
  })
})

describe('without an OpenTelemetry SDK', () => {
  it('tracing is off, the hook adds nothing and send spans are skipped', async () => {
    expect(isTracingEnabled()).toBe(false)
    expect(traceContextHook('t', newEvent('x', 1))).toEqual({})
    let called = 0
    await expect(withSendSpan('t', [], () => Promise.resolve(++called))).resolves.toBe(1)
  })

  it('published entries carry no traceparent', async () => {
    const events = createEventManager({ backend: 'memory', env: {} })
    await events.publish('plain', newEvent('x', 1))
    const received = await new Promise<Message>((resolve) => {
      const sub = events.consume('plain', { group: 'g' }).subscribe((m) => {
        void m.ack()
        sub.unsubscribe()
        resolve(m)
      })
    })
    expect((received.event as Partial<StoredEvent>).traceparent).toBeUndefined()
    await events.close()
  })
})

function memoryStream(): { stream: Writable; lines: string[] } {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l.length > 0))
      callback()
    },
  })
  return { stream, lines }
}

describe('redaction', () => {
  it('scrubText masks URL credentials and secrets', () => {
    expect(scrubText('redis://user:p@ss@host:6379 and rediss://:x@h')).toBe('redis://user:***@host:6379 and rediss://:***@h')
    expect(scrubText('no url here, hunter2', ['hunter2'])).toBe('no url here, ***')
    expect(scrubText('redis://host:6379/0')).toBe('redis://host:6379/0')
  })

  it('redactingLogger keeps the parent log formatter and masks secrets in every field', () => {
    const { stream, lines } = memoryStream()
    const parent = pino({ level: 'info', formatters: { log: (o) => ({ ...o, added: 'by parent' }) } }, stream)
    const logger = redactingLogger(parent, ['s3cret'])
    logger.info({ note: 'token s3cret', url: 'redis://a:b@c', password: 'anything', nested: [{ deep: 'redis://:zz@h' }] }, 'hello')
    const record = JSON.parse(lines[0]!) as Record<string, unknown>
    expect(record).toMatchObject({ note: 'token ***', url: 'redis://a:***@c', password: '***', nested: [{ deep: 'redis://:***@h' }], added: 'by parent', msg: 'hello' })
  })

  it('createLogger defaults to info and honours a given level', () => {
    expect(createLogger({ destination: memoryStream().stream }).level).toBe('info')
    expect(createLogger({ level: 'warn', destination: memoryStream().stream }).level).toBe('warn')
  })
})

describe('messageLogFields', () => {
  it('names the message: topic, group, consumer, stream id, event id and name, correlation id (or the event id)', () => {
    const event = newEvent('order.placed', {})
    const message = { topic: 't', group: 'g', consumer: 'c', streamId: '1-0', event }
    expect(messageLogFields(message)).toEqual({ topic: 't', group: 'g', consumer: 'c', streamId: '1-0', eventId: event.id, eventName: 'order.placed', correlationId: event.id })
    expect(messageLogFields({ ...message, event: { ...event, correlationId: 'chain-1' } }).correlationId).toBe('chain-1')
  })
})
