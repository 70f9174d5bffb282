import { Subject, type Subscription } from 'rxjs'
import { describe, expect, it } from 'vitest'
import { joinWithin } from '../../operators/join-within.js'
import { windowSliding } from '../../operators/window-sliding.js'
import type { JoinedPair, Window } from '../../operators/window-types.js'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import { operatorStateStore } from '../../src/shared-settlement.js'
import { FakeMessage, keyOf, msg, show, showPair } from './window-fakes.js'

/** Lets state lookups and writes (promises) finish. */
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 0))

/** A message of a subscription whose store keeps operator state. */
function stored(store: MemoryBackend, m: FakeMessage): FakeMessage {
  return Object.assign(m, { [operatorStateStore]: store })
}

/** One run of a sliding 20/10 window over a subject (a process); `crash()` unsubscribes without settling. */
function slidingRun() {
  const source = new Subject<FakeMessage>()
  const windows: Window<FakeMessage>[] = []
  const subscription: Subscription = source.pipe(windowSliding(20, 10, { late: 'deadLetter' })).subscribe((w) => windows.push(w))
  return { source, windows, crash: () => subscription.unsubscribe() }
}

describe('window state across restarts (issue 12, item 8)', () => {
  it('a restart neither re-emits a settled window nor emits the open one with partial content', async () => {
    const store = new MemoryBackend()
    const [a, b, c] = [msg('a', 10), msg('b', 15), msg('c', 25)].map((m) => stored(store, m)) as [FakeMessage, FakeMessage, FakeMessage]
    const first = slidingRun()
    for (const m of [a, b, c]) first.source.next(m)
    await settle() // the first message of a scope waits for its remembered watermark
    expect(first.windows.map(show)).toEqual(['[0,20):ab'])
    await first.windows[0]!.ack() // recorded as settled; a and b stay pending: [10, 30) holds them
    first.crash()

    // The restart replays the pending entries (a higher delivery count), then a new event closes their windows.
    const second = slidingRun()
    for (const m of [a, b, c]) second.source.next(m.redelivered())
    second.source.next(stored(store, msg('d', 45)))
    await settle()
    expect(second.windows.map(show)).toEqual(['[10,30):abc', '[20,40):c'])
  })

  it('acks a replayed entry all of whose windows were emitted and settled, and dead-letters one whose windows closed without it', async () => {
    const store = new MemoryBackend()
    const [a, b, z] = [msg('a', 10), msg('b', 25), msg('z', 3)].map((m) => stored(store, m)) as [FakeMessage, FakeMessage, FakeMessage]
    const first = slidingRun()
    first.source.next(a)
    first.source.next(b) // closes [0, 20)
    first.source.next(stored(store, msg('c', 31))) // closes [10, 30)
    await settle()
    expect(first.windows.map(show)).toEqual(['[0,20):a', '[10,30):ab'])
    await Promise.all(first.windows.map((w) => w.ack()))
    first.crash()

    const second = slidingRun()
    const again = a.redelivered() // e.g. the crash came before its ack reached the store
    const lateOne = z.redelivered() // its window [-10, 10) closed without it (stream time was 31)
    second.source.next(again)
    second.source.next(lateOne)
    await settle()
    expect([again.acks, again.deadLetters]).toEqual([1, 0])
    expect([lateOne.acks, lateOne.deadLetters]).toEqual([0, 1])
    expect(second.windows).toEqual([])
  })

  it('collects a window emitted but not settled before the restart again, whole', async () => {
    const store = new MemoryBackend()
    const [a, b] = [msg('a', 10), msg('b', 12)].map((m) => stored(store, m)) as [FakeMessage, FakeMessage]
    const first = slidingRun()
    for (const m of [a, b, stored(store, msg('c', 25))]) first.source.next(m)
    await settle()
    expect(first.windows.map(show)).toEqual(['[0,20):ab']) // emitted, then the process crashed while handling it
    first.crash()
    await settle()

    const second = slidingRun()
    second.source.next(a.redelivered())
    await settle()
    expect(second.windows).toEqual([]) // not with one of its two messages
    second.source.next(b.redelivered())
    await settle()
    expect(second.windows.map(show)).toEqual(['[0,20):ab'])
    expect(second.windows[0]!.partial).toBe(false)
  })

  it('warns when two consumers of one group emit the same window of a key', async () => {
    const store = new MemoryBackend()
    const warnings: string[] = []
    const onWarning = (warning: Error & { code?: string }): void => {
      if (warning.code === 'RX_REDIS_STREAMS_SPLIT_WINDOW') warnings.push(warning.message)
    }
    process.on('warning', onWarning)
    try {
      // Two consumers of one group, running at once: each gets half of the key's events.
      const runs = ['c1', 'c2'].map((consumer) => ({ consumer, run: slidingRun() }))
      for (const time of [1, 30]) {
        for (const { consumer, run } of runs) run.source.next(Object.assign(stored(store, msg(`${consumer}@${time}`, time)), { consumer }))
        await settle()
      }
      for (const { run } of runs) run.crash()
      await new Promise((resolve) => setTimeout(resolve, 10))
      expect(warnings.length).toBeGreaterThan(0)
      expect(warnings[0]).toMatch(/emitted by consumer "c1" and now by "c2".*one consumer per key/)
    } finally {
      process.off('warning', onWarning)
    }
  })
})

describe('join state across restarts (issue 12, item 8)', () => {
  it('never emits a replayed entry that had matched as unmatched', async () => {
    const store = new MemoryBackend()
    const run = () => {
      const lefts = new Subject<FakeMessage>()
      const rights = new Subject<FakeMessage>()
      const pairs: JoinedPair<FakeMessage, FakeMessage | undefined>[] = []
      const subscription = lefts
        .pipe(joinWithin(rights, { leftKey: keyOf, rightKey: keyOf, within: 5, grace: 0, type: 'left' }))
        .subscribe((p) => pairs.push(p))
      return { lefts, rights, pairs, crash: () => subscription.unsubscribe() }
    }
    const l = stored(store, msg('L', 0, 'k'))
    const r = stored(store, msg('R', 1, 'k'))
    const first = run()
    first.lefts.next(l)
    first.rights.next(r)
    await settle() // the first message of a scope waits for its remembered state
    expect(first.pairs.map(showPair)).toEqual(['L+R'])
    await first.pairs[0]!.ack()
    first.lefts.next(stored(store, msg('M', 8, 'other'))) // R's time has passed: it leaves the buffer, acked
    await settle()
    expect(r.acks).toBe(1)
    expect(l.acks).toBe(0) // still waiting for payments near it
    first.crash()

    const second = run()
    const again = l.redelivered()
    second.lefts.next(again)
    await settle()
    second.lefts.complete()
    second.rights.complete()
    await settle()
    expect(second.pairs.map(showPair)).toEqual([]) // no spurious L+_
    expect(again.acks).toBe(1)
  })
})
