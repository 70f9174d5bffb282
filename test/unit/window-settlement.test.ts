import { map, Subject, tap } from 'rxjs'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { windowSliding } from '../../operators/window-sliding.js'
import { windowTumbling } from '../../operators/window-tumbling.js'
import type { Window } from '../../operators/window-types.js'
import type { Message } from '../../src/consumer/message.js'
import { sourceIdle } from '../../src/shared-settlement.js'
import { FakeMessage, msg, show, testScheduler } from './window-fakes.js'

const ids = (w: Window<{ readonly event: { readonly payload: unknown } }>): string => w.messages.map((m) => String(m.event.payload)).join('')

describe('windows and redelivery (issue 12, item 2)', () => {
  it('a window holds each stream entry once: a redelivered copy replaces the copy it holds', async () => {
    // sliding 20/10: a@10 is in [0,20) and [10,30); x@25 closes [0,20), which is nacked; a's redelivery
    // arrives while [10,30) is open
    const a = msg('a', 10)
    const x = msg('x', 25)
    const source = new Subject<FakeMessage>()
    const windows: Window<FakeMessage>[] = []
    source.pipe(windowSliding(20, 10)).subscribe((w) => windows.push(w))
    source.next(a)
    source.next(x)
    expect(windows.map(show)).toEqual(['[0,20):a'])
    await windows[0]!.nack(new Error('handler failed'))
    expect(a.nacks).toBe(1)
    const again = a.redelivered()
    source.next(again)
    source.complete()
    expect(windows.map(show)).toEqual(['[0,20):a', '[10,30):ax', '[20,40):x'])
    expect(windows[1]!.messages[0]).toBe(again) // the new delivery, not the nacked one
    await windows[1]!.ack()
    await windows[2]!.ack()
    expect([again.acks, x.acks]).toEqual([1, 1])
  })

  it('a second view of a held entry does not make the window count it twice', () => {
    const a = msg('a', 1)
    const source = new Subject<Message<string>>()
    const windows: Window<Message<string>>[] = []
    source.pipe(windowTumbling(10)).subscribe((w) => windows.push(w))
    source.next(a)
    source.next(a.view())
    source.complete()
    expect(windows.map(ids)).toEqual(['a'])
  })
})

describe('shared settlement across views (issue 12, item 3)', () => {
  it('two windowing branches fed different views of one entry ack it only when both settled', async () => {
    const a = msg('a', 1)
    const b = msg('b', 12)
    const first: Window<Message<string>>[] = []
    const second: Window<Message<string>>[] = []
    const one = new Subject<Message<string>>()
    const two = new Subject<Message<string>>()
    one.pipe(windowTumbling(10)).subscribe((w) => first.push(w))
    two.pipe(windowTumbling(10, { grace: 5 })).subscribe((w) => second.push(w))
    for (const m of [a, b]) {
      one.next(m.view())
      two.next(m.view())
    }
    expect(first.map(ids)).toEqual(['a'])
    await first[0]!.ack()
    expect(a.acks).toBe(0) // the second branch still holds a
    one.complete()
    two.complete()
    await first[1]!.ack()
    expect(b.acks).toBe(0)
    await Promise.all(second.map((w) => w.ack()))
    expect([a.acks, b.acks]).toEqual([1, 1])
  })
})

describe('window order per key (issue 12, item 6)', () => {
  it('an early window comes out after the open windows of its key that start before it', () => {
    // tumbling 10, grace 5, maxMessages 2: b@11 and c@12 fill [10,20) while [0,10) is still open
    const v = { a: msg('a', 1), b: msg('b', 11), c: msg('c', 12) }
    testScheduler().run(({ cold, expectObservable }) => {
      expectObservable(cold('abc---|', v).pipe(windowTumbling(10, { grace: 5, maxMessages: 2 }), map(show))).toBe('--(xy)|', {
        x: '[0,10)!:a',
        y: '[10,20)!:bc',
      })
    })
  })
})

describe('idle advancement only when the source is idle (issue 12, item 9)', () => {
  it('stream time does not follow the clock while the source is back-pressured: in-order events after a pause are not late', () => {
    const scheduler = testScheduler()
    scheduler.run(({ cold, expectObservable }) => {
      // The source has more to deliver (not idle) until frame 30: a 21 ms pause with a credit full behind a slow sink.
      const idle = (): boolean => scheduler.now() >= 30
      const v = { a: msg('a', 3), b: msg('b', 8) }
      for (const m of Object.values(v)) Object.assign(m, { [sourceIdle]: idle })
      const windows = cold('a 20ms b 20ms |', v).pipe(windowTumbling(10, { idleTimeout: 5, scheduler }), map(show))
      // b@8 arrives at frame 21 and joins [0, 10); only once idle (from frame 30; the timer looks at 31) does stream time
      // follow the clock
      expectObservable(windows).toBe('31ms x 10ms |', { x: '[0,10):ab' })
      expect(v.b.deadLetters).toBe(0)
    })
  })

  it('follows the clock once the source is idle', () => {
    const scheduler = testScheduler()
    scheduler.run(({ cold, expectObservable }) => {
      const a = Object.assign(msg('a', 3), { [sourceIdle]: () => true })
      expectObservable(cold('a 30ms |', { a }).pipe(windowTumbling(10, { idleTimeout: 5, scheduler }), map(show))).toBe('7ms x 23ms |', { x: '[0,10):a' })
    })
  })
})

describe('shutdown and completion (issue 12, items 10 and 11)', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('on a graceful stop, gives back what open windows hold at once, emits nothing, completes, and leaves no timer', () => {
    vi.useFakeTimers()
    const messages = [msg('a', 1), msg('b', 2), msg('c', 14)]
    const source = new Subject<FakeMessage>()
    const emitted: unknown[] = []
    let completed = false
    source.pipe(windowTumbling(10, { idleTimeout: 60_000, grace: 5 })).subscribe({ next: (w) => emitted.push(w), complete: () => (completed = true) })
    for (const m of messages) source.next(m)
    expect(vi.getTimerCount()).toBe(1) // the idle timer
    for (const m of messages) m.withdrawn = true // close(): the subscription stops and withdraws what is unsettled
    source.complete()
    expect(completed).toBe(true)
    expect(emitted).toEqual([])
    expect(messages.map((m) => [m.released, m.calls])).toEqual([
      [1, 0],
      [1, 0],
      [1, 0],
    ])
    expect(messages[0]!.holds).toEqual([Number.POSITIVE_INFINITY, Date.now()])
    expect(vi.getTimerCount()).toBe(0)
  })

  it('flags windows flushed because the source completed as partial, and windows closed on time as not partial', () => {
    const v = { a: msg('a', 0), b: msg('b', 12) }
    const emitted: Window<FakeMessage>[] = []
    testScheduler().run(({ cold, expectObservable }) => {
      expectObservable(cold('ab|', v).pipe(windowTumbling(10), tap((w) => emitted.push(w)), map(show))).toBe('-x(y|)', { x: '[0,10):a', y: '[10,20):b' })
    })
    expect(emitted.map((w) => [w.partial, w.early])).toEqual([
      [false, false],
      [true, false],
    ])
  })
})
