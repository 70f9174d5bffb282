/**
 * The handling context on handleEach's hot path: the subscription emits each
 * message in its own context, handleEach runs the handler in it (without
 * entering it again when it is already current), and each outcome is emitted
 * downstream in the context of its own message, even though the outcomes of
 * one XACK batch are reported from one `then`. On the memory backend.
 */
import { lastValueFrom, take, tap, toArray } from 'rxjs'
import { afterEach, describe, expect, it } from 'vitest'
import { handleEach } from '../../operators/index.js'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import { createEventManager, currentHandlingContext, newEvent, type EventManager } from '../../src/index.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

let n = 0
const name = (p: string): string => `${p}-${String(process.pid)}-${String(n++)}-${Math.random().toString(36).slice(2, 8)}`

const managers: EventManager[] = []
afterEach(async () => {
  await Promise.all(managers.splice(0).map((m) => m.close()))
})

function manager(): EventManager {
  const m = createEventManager({ backend: new MemoryBackend(), env: {} })
  managers.push(m)
  return m
}

describe('handleEach and the handling context', () => {
  it('the handler (before and after an await) and the downstream emission see their own message as the context', async () => {
    const events = manager()
    const topic = name('ctx')
    const group = name('g')
    const count = 300
    await events.publishBatch(
      topic,
      Array.from({ length: count }, (_, i) => newEvent('ctx.test', { i }, { correlationId: `c${String(i)}` })),
    )
    const wrong: string[] = []
    const check = (where: string, expectedId: string): void => {
      const ctx = currentHandlingContext()
      if (ctx?.event.id !== expectedId || ctx.topic !== topic || ctx.group !== group) wrong.push(`${where}: ${String(ctx?.event.id)} for ${expectedId}`)
    }
    const handled = await lastValueFrom(
      events
        .topic(topic)
        .consume({ group, batchSize: 50 })
        .pipe(
          handleEach(
            (msg) => {
              check('sync', msg.event.id)
              const i = (msg.event.payload as { i: number }).i
              // Half of them synchronous, half after an await (they finish out of order).
              if (i % 2 === 0) return undefined
              return sleep(i % 7).then(() => check('async', msg.event.id))
            },
            { concurrency: 40 },
          ),
          tap(({ message }) => check('downstream', message.event.id)),
          take(count),
          toArray(),
        ),
    )
    expect(handled).toHaveLength(count)
    expect(handled.every((h) => h.outcome === 'acked')).toBe(true)
    expect(new Set(handled.map((h) => h.message.streamId)).size).toBe(count)
    expect(wrong).toEqual([])
    // Outside any handling: no context.
    expect(currentHandlingContext()).toBeUndefined()
  })

  it('an event published inside the handler inherits the correlation id of the message handled', async () => {
    const events = manager()
    const topic = name('src')
    const out = name('out')
    const group = name('g')
    const count = 60
    await events.publishBatch(
      topic,
      Array.from({ length: count }, (_, i) => newEvent('src.test', { i }, { correlationId: `corr-${String(i)}` })),
    )
    await lastValueFrom(
      events
        .topic(topic)
        .consume({ group, batchSize: 20 })
        .pipe(
          handleEach(
            async (msg) => {
              await sleep(1)
              await events.publish(out, newEvent('out.test', { from: msg.event.correlationId }))
            },
            { concurrency: 10 },
          ),
          take(count),
        ),
    )
    const copies = await lastValueFrom(
      events
        .topic(out)
        .consume({ group: name('g2') })
        .pipe(
          tap((m) => void m.ack()),
          take(count),
          toArray(),
        ),
    )
    for (const copy of copies) expect(copy.event.correlationId).toBe((copy.event.payload as { from: string }).from)
  })
})
