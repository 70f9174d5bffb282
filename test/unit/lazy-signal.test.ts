/**
 * The attempt's AbortSignal is created only when someone reads it (a message's
 * `signal`, handleEach's context `signal`), and an abort that came before the
 * first read still yields an already-aborted signal with the abort's reason.
 * On the memory backend.
 */
import { lastValueFrom, take, toArray } from 'rxjs'
import { afterEach, describe, expect, it } from 'vitest'
import { handleEach, type HandlerContext } from '../../operators/index.js'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import { ConsumerTimeoutError } from '../../src/errors.js'
import { createEventManager, newEvent, type EventManager, type Message } from '../../src/index.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

let n = 0
const name = (p: string): string => `${p}-${String(process.pid)}-${String(n++)}`

const managers: EventManager[] = []
afterEach(async () => {
  await Promise.all(managers.splice(0).map((m) => m.close()))
})

function manager(options: Record<string, unknown> = {}): EventManager {
  const m = createEventManager({ backend: new MemoryBackend(), env: {}, ...options })
  managers.push(m)
  return m
}

/** Runs `fn` while counting the AbortControllers constructed. */
async function countingControllers(fn: () => Promise<void>): Promise<number> {
  const Original = globalThis.AbortController
  let created = 0
  class Counting extends Original {
    constructor() {
      super()
      created++
    }
  }
  globalThis.AbortController = Counting
  try {
    await fn()
  } finally {
    globalThis.AbortController = Original
  }
  return created
}

describe('the attempt signal is created on first read', () => {
  it('handleEach creates no AbortController per message when the handler never reads the signal', async () => {
    const count = 200
    const drain = async (readSignal: boolean): Promise<void> => {
      const events = manager()
      const topic = name('lazy')
      for (let i = 0; i < count; i++) await events.publish(topic, newEvent('e', i))
      await lastValueFrom(
        events
          .topic(topic)
          .consume({ group: 'g', batchSize: 50 })
          .pipe(
            handleEach(
              (_m, context) => {
                if (readSignal) expect(context.signal.aborted).toBe(false)
              },
              { concurrency: 10 },
            ),
            take(count),
            toArray(),
          ),
      )
    }
    const unread = await countingControllers(() => drain(false))
    const read = await countingControllers(() => drain(true))
    expect(unread).toBeLessThan(count)
    expect(read).toBeGreaterThanOrEqual(count)
  })

  it('a message timed out before anyone read its signal returns an already-aborted signal with the timeout as reason', async () => {
    const events = manager({ retryBackoff: 10 })
    const topic = name('late-read')
    await events.publish(topic, newEvent('slow', 0))
    const copies: Message[] = []
    events
      .topic(topic)
      .consume({ group: 'g', consumerTimeout: 200 })
      .subscribe((m) => {
        if (copies.length === 0) m.begin()
        copies.push(m)
      })
    await waitFor(() => copies.length === 1, 'the first copy')
    const first = copies[0] as Message
    await waitFor(() => first.outcome === 'nacked', 'the timeout')
    const signal = first.signal
    expect(signal.aborted).toBe(true)
    expect(signal.reason).toBeInstanceOf(ConsumerTimeoutError)
    // The same signal on every read, and through a decoded view.
    expect(first.signal).toBe(signal)
    expect(first.withPayload('x').signal).toBe(signal)
    await first.ack()
  })

  it("handleEach's context signal, read only after the attempt timed out, is aborted; it is one signal, and a spread copies it", async () => {
    const events = manager({ retryBackoff: 10 })
    const topic = name('ctx-late')
    await events.publish(topic, newEvent('slow', 0))
    let context: HandlerContext | undefined
    let message: Message | undefined
    let release: (() => void) | undefined
    events
      .topic(topic)
      .consume({ group: 'g', consumerTimeout: 200 })
      .pipe(
        handleEach(
          (m, ctx) => {
            if (context !== undefined) return undefined
            context = ctx
            message = m
            return new Promise<void>((resolve) => (release = resolve))
          },
          { retry: false },
        ),
      )
      .subscribe()
    await waitFor(() => message?.outcome === 'nacked', 'the timeout')
    const ctx = context as HandlerContext
    expect(ctx.attempt).toBe(1)
    expect(ctx.signal.aborted).toBe(true)
    expect(ctx.signal.reason).toBeInstanceOf(ConsumerTimeoutError)
    expect(ctx.signal).toBe(ctx.signal)
    expect(ctx.signal).toBe(message?.signal)
    expect({ ...ctx }).toEqual({ attempt: 1, signal: ctx.signal })
    release?.()
  })
})
