import { map, Observable, of, tap, type OperatorFunction } from 'rxjs'
import { describe, expect, expectTypeOf, it } from 'vitest'
import { reduceWindow } from '../../operators/reduce-window.js'
import { windowSession } from '../../operators/window-session.js'
import { windowSliding } from '../../operators/window-sliding.js'
import { windowTumbling } from '../../operators/window-tumbling.js'
import { isLate, isWindow, LateEventError, type Late, type Window } from '../../operators/window-types.js'
import { creditLimit } from '../../src/shared-settlement.js'
import { FakeMessage, keyOf, msg, show, testScheduler } from './window-fakes.js'

type Windows = Window<FakeMessage> | Late<FakeMessage>

/** Runs `operator` over `source` marbles and checks the windows it emits (as `show` strings). */
function expectWindows(
  source: string,
  values: Record<string, FakeMessage>,
  operator: OperatorFunction<FakeMessage, Windows>,
  expected: string,
  windows: Record<string, string>,
  emitted: Windows[] = [],
): void {
  testScheduler().run(({ cold, expectObservable }) => {
    expectObservable(cold(source, values).pipe(operator, tap((w) => emitted.push(w)), map(show))).toBe(expected, windows)
  })
}

describe('windowTumbling', () => {
  it('emits a window once stream time reaches its end, in window order, and flushes open windows on completion', () => {
    const v = { a: msg('a', 0), b: msg('b', 9), c: msg('c', 10), d: msg('d', 25) }
    expectWindows('a-b-c-d|', v, windowTumbling(10), '----x-y(z|)', {
      x: '[0,10):ab', // 9 is inside [0, 10); 10 is not, and closes it
      y: '[10,20):c',
      z: '[20,30):d', // completion: stream time is over, not early
    })
    for (const m of Object.values(v)) expect(m.calls).toBe(0) // settling is the subscriber's job
  })

  it('holds messages while their window is open and lets the consumer timeout run again from the emission', () => {
    const v = { a: msg('a', 0), b: msg('b', 9), c: msg('c', 10) }
    expectWindows('a-b-c-|', v, windowTumbling(10), '----x-(y|)', { x: '[0,10):ab', y: '[10,20):c' })
    expect(v.a.holds).toEqual([Number.POSITIVE_INFINITY, 4])
    expect(v.b.holds).toEqual([Number.POSITIVE_INFINITY, 4])
    expect(v.c.holds).toEqual([Number.POSITIVE_INFINITY, 6])
  })

  it('keeps a window open for grace after its end and accepts late events until then', () => {
    const v = { a: msg('a', 0), b: msg('b', 12), c: msg('c', 8), d: msg('d', 15), e: msg('e', 3) }
    expectWindows('a-b-c-d-e|', v, windowTumbling(10, { grace: 5 }), '------x--(y|)', {
      x: '[0,10):ac', // 12 < 10 + 5 kept it open for c@8; 15 closes it
      y: '[10,20):bd',
    })
    expect(v.e.deadLetters).toBe(1) // e@3 arrives after [0, 10) closed
  })

  describe('late events', () => {
    const scenario = () => ({ a: msg('a', 0), b: msg('b', 10), c: msg('c', 5) })

    it("dead-letters them by default, with a LateEventError", () => {
      const v = scenario()
      expectWindows('a-b-c|', v, windowTumbling(10), '--x--(y|)', { x: '[0,10):a', y: '[10,20):b' })
      expect([v.c.acks, v.c.nacks, v.c.deadLetters]).toEqual([0, 0, 1])
      const reason = v.c.reasons[0]
      expect(reason).toBeInstanceOf(LateEventError)
      expect(reason).toMatchObject({ code: 'LATE_EVENT', timestamp: 5, streamTime: 10, key: '' })
    })

    it("acks them with late: 'ack'", () => {
      const v = scenario()
      expectWindows('a-b-c|', v, windowTumbling(10, { late: 'ack' }), '--x--(y|)', { x: '[0,10):a', y: '[10,20):b' })
      expect([v.c.acks, v.c.nacks, v.c.deadLetters]).toEqual([1, 0, 0])
    })

    it("emits them as Late values, unsettled, with late: 'emit'", () => {
      const v = scenario()
      const emitted: Windows[] = []
      expectWindows(
        'a-b-c|',
        v,
        windowTumbling(10, { late: 'emit' }),
        '--x-l(y|)',
        { x: '[0,10):a', l: 'late:c@10', y: '[10,20):b' },
        emitted,
      )
      expect(v.c.calls).toBe(0)
      const late = emitted.filter(isLate)
      expect(late).toHaveLength(1)
      expect(emitted.filter(isWindow)).toHaveLength(2)
      void late[0]!.ack()
      expect(v.c.acks).toBe(1)
    })
  })

  describe('idle advancement', () => {
    it('closes the last window by the clock, without a future event', () => {
      // a@3 at frame 0; stream time follows the clock after 5 idle frames: 3 + 7 = 10 at frame 7
      expectWindows('a 30ms |', { a: msg('a', 3) }, windowTumbling(10, { idleTimeout: 5 }), '7ms x 23ms |', { x: '[0,10):a' })
    })

    it('waits at least idleTimeout before stream time follows the clock', () => {
      expectWindows('a 30ms |', { a: msg('a', 3) }, windowTumbling(10, { idleTimeout: 20 }), '20ms x 10ms |', { x: '[0,10):a' })
    })

    it('treats an event behind the advanced stream time as late, and moves on with a newer one', () => {
      const v = { a: msg('a', 3), b: msg('b', 8), c: msg('c', 30) }
        const scheduler = testScheduler()
      scheduler.run(({ cold, expectObservable }) => {
        // The scheduler passed explicitly (inside run(), the TestScheduler also drives the default asyncScheduler).
        const windows = cold('a 8ms b 2ms c 30ms |', v).pipe(windowTumbling(10, { idleTimeout: 5, scheduler }))
        // c@30 at frame 12 moves stream time again; its window [30, 40) closes by the clock at 12 + 10
        expectObservable(windows.pipe(map(show))).toBe('7ms x 14ms y 20ms |', { x: '[0,10):a', y: '[30,40):c' })
      })
      expect(v.b.deadLetters).toBe(1) // b@8 at frame 9: stream time is 3 + 9 = 12, [0, 10) has closed
    })
  })

  it('emits a window reaching maxMessages at once, flagged early, and starts a new one for the same bounds', () => {
    const v = { a: msg('a', 1), b: msg('b', 2), c: msg('c', 3), d: msg('d', 12) }
    expectWindows('a-b-c-d|', v, windowTumbling(10, { maxMessages: 2 }), '--x---y(z|)', {
      x: '[0,10)!:ab',
      y: '[0,10):c',
      z: '[10,20):d',
    })
  })

  it('keeps separate windows per key, each key in window order', () => {
    const v = { a: msg('a', 1, 'k1'), b: msg('b', 5, 'k2'), c: msg('c', 11, 'k1'), d: msg('d', 12, 'k2'), e: msg('e', 21, 'k2') }
    expectWindows('a-b-c---d---e---|', v, windowTumbling(10, { key: keyOf }), '----(xy)----(uv)(w|)', {
      x: 'k1[0,10):a',
      y: 'k2[0,10):b',
      u: 'k1[10,20):c',
      v: 'k2[10,20):d',
      w: 'k2[20,30):e',
    })
  })

  it('emits the window closing first, early, when open windows hold maxOpenMessages messages', () => {
    const v = { a: msg('a', 1, 'k1'), b: msg('b', 2, 'k2'), c: msg('c', 3, 'k3'), d: msg('d', 4, 'k1'), e: msg('e', 12, 'k2') }
    expectWindows('abcde---|', v, windowTumbling(10, { key: keyOf, maxOpenMessages: 3 }), '--xy(uv)(w|)', {
      x: 'k1[0,10)!:a', // a, b, c held: the first to close goes
      y: 'k2[0,10)!:b', // b, c, d held
      u: 'k3[0,10):c',
      v: 'k1[0,10):d',
      w: 'k2[10,20):e',
    })
  })

  it('never deadlocks a credit-limited source when maxOpenMessages equals the credit', async () => {
    const credit = 4
    const run = async (maxOpenMessages?: number, carryCredit = false) => {
      const messages = Array.from({ length: 20 }, (_, i) => msg(`m${i}`, i, `k${i % 7}`))
      if (carryCredit) for (const m of messages) Object.assign(m, { [creditLimit]: credit })
      let pulled = 0
      let pending = 0
      // Pulls while fewer than `credit` messages are unsettled, like a subscription.
      const source = new Observable<FakeMessage>((subscriber) => {
        const pull = (): void => {
          while (pending < credit && pulled < messages.length) {
            const m = messages[pulled++]!
            pending++
            m.onSettled = () => {
              pending--
              queueMicrotask(pull)
            }
            subscriber.next(m)
          }
        }
        pull()
      })
      const options = maxOpenMessages === undefined ? { key: keyOf } : { key: keyOf, maxOpenMessages }
      const subscription = source.pipe(windowTumbling(60_000, options)).subscribe((w) => void w.ack())
      await new Promise((resolve) => setTimeout(resolve, 0))
      subscription.unsubscribe()
      return { pulled, acked: messages.filter((m) => m.acks === 1).length }
    }
    // Without the guard, 4 messages in open windows use the whole credit: nothing moves.
    expect(await run()).toEqual({ pulled: credit, acked: 0 })
    // With it, every message gets through; fewer than `credit` stay in open windows.
    const guarded = await run(credit)
    expect(guarded.pulled).toBe(20)
    expect(guarded.acked).toBeGreaterThan(20 - credit)
    // Messages carrying their subscription's credit guard the windows without the option.
    const carried = await run(undefined, true)
    expect(carried.pulled).toBe(20)
    expect(carried.acked).toBeGreaterThan(20 - credit)
  })

  it('dead-letters a message without a finite event time', () => {
    const v = { a: msg('a', Number.NaN) }
    expectWindows('a|', v, windowTumbling(10), '-|', {})
    expect(v.a.deadLetters).toBe(1)
  })

  it('propagates an error and settles nothing', () => {
    const v = { a: msg('a', 1) }
    expectWindows('a-#', v, windowTumbling(10), '--#', {})
    expect(v.a.calls).toBe(0)
  })

  it('settles nothing on unsubscribe, so a crash replays the open windows', () => {
    const v = { a: msg('a', 1), b: msg('b', 2) }
    testScheduler().run(({ cold, expectObservable }) => {
      expectObservable(cold('a-b---|', v).pipe(windowTumbling(10), map(show)), '^--!').toBe('---')
    })
    expect(v.a.calls + v.b.calls).toBe(0)
    // their holds are released, so the consumer timeout applies again if the subscription lives on
    expect(v.a.holds).toEqual([Number.POSITIVE_INFINITY, 3])
  })

  it('rejects invalid sizes and limits', () => {
    expect(() => windowTumbling(0)).toThrow(RangeError)
    expect(() => windowTumbling(10, { grace: -1 })).toThrow(RangeError)
    expect(() => windowTumbling(10, { maxMessages: 0 })).toThrow(RangeError)
    expect(() => windowTumbling(10, { maxOpenMessages: 1.5 })).toThrow(RangeError)
    expect(() => windowTumbling(10, { idleTimeout: 0 })).toThrow(RangeError)
  })
})

describe('windowSliding', () => {
  it('puts a message in every window that holds its time and closes them in order', () => {
    const v = { a: msg('a', 7), b: msg('b', 12), c: msg('c', 15) }
    expectWindows('a-b-c---|', v, windowSliding(10, 5), '--x-y---(zw|)', {
      x: '[0,10):a', // b@12 closes it
      y: '[5,15):ab', // 15 is outside [5, 15) and closes it
      z: '[10,20):bc',
      w: '[15,25):c',
    })
  })

  it('adds an event to its windows still open, and treats it as late only when all have closed', () => {
    const v = { a: msg('a', 15), b: msg('b', 9), c: msg('c', 11) }
    expectWindows('abc|', v, windowSliding(10, 5), '---(xy|)', { x: '[10,20):ac', y: '[15,25):a' })
    expect(v.b.deadLetters).toBe(1) // [0, 10) and [5, 15) closed at stream time 15
    expect(v.c.calls).toBe(0) // [5, 15) closed, [10, 20) took it
  })

  it('applies grace to every window', () => {
    const v = { a: msg('a', 15), b: msg('b', 9) }
    expectWindows('ab|', v, windowSliding(10, 5, { grace: 1 }), '--(xyz|)', { x: '[5,15):b', y: '[10,20):a', z: '[15,25):a' })
    expect(v.b.deadLetters).toBe(0)
  })

  it('closes overlapping windows by the clock when idle', () => {
    // a@7: [0,10) closes at 10, [5,15) at 15; idle from frame 5, stream time 7 + t
    expectWindows('a 20ms |', { a: msg('a', 7) }, windowSliding(10, 5, { idleTimeout: 5 }), '5ms x 2ms y 12ms |', {
      x: '[0,10):a',
      y: '[5,15):a',
    })
  })

  it('emits each overlapping window early on maxMessages', () => {
    const v = { a: msg('a', 7), b: msg('b', 8), c: msg('c', 9) }
    expectWindows('abc---|', v, windowSliding(10, 5, { maxMessages: 2 }), '-(xy)-(zw|)', {
      x: '[0,10)!:ab',
      y: '[5,15)!:ab',
      z: '[0,10):c',
      w: '[5,15):c',
    })
  })

  it('keeps separate windows per key, including windows that start before the epoch', () => {
    const v = { a: msg('a', 3, 'k1'), b: msg('b', 4, 'k2'), c: msg('c', 10, 'k1') }
    expectWindows('abc------|', v, windowSliding(10, 5, { key: keyOf }), '--(wxyz)-(uv|)', {
      w: 'k1[-5,5):a',
      x: 'k2[-5,5):b',
      y: 'k1[0,10):a',
      z: 'k2[0,10):b',
      u: 'k1[5,15):c',
      v: 'k1[10,20):c',
    })
  })

  it('rejects an advance larger than the size', () => {
    expect(() => windowSliding(10, 11)).toThrow(RangeError)
  })
})

describe('windowSession', () => {
  it('extends a session while gaps are shorter than the gap, and closes it at last time + gap', () => {
    const v = { a: msg('a', 0), b: msg('b', 3), c: msg('c', 7), d: msg('d', 12) }
    expectWindows('abcd|', v, windowSession(5), '---x(y|)', { x: '[0,12):abc', y: '[12,17):d' })
  })

  it('merges two open sessions bridged by an out-of-order event within grace', () => {
    const v = { a: msg('a', 0), b: msg('b', 8), c: msg('c', 4), d: msg('d', 20) }
    expectWindows('abcd|', v, windowSession(5, { grace: 5 }), '---x(y|)', { x: '[0,13):abc', y: '[20,25):d' })
  })

  it('treats an event whose session would already be closed as late', () => {
    const v = { a: msg('a', 0), b: msg('b', 10), c: msg('c', 2) }
    expectWindows('abc|', v, windowSession(5, { late: 'ack' }), '-x-(y|)', { x: '[0,5):a', y: '[10,15):b' })
    expect(v.c.acks).toBe(1)
  })

  it('keeps sessions per key and closes them by the clock when idle', () => {
    const v = { a: msg('a', 0, 'k1'), b: msg('b', 2, 'k2') }
    expectWindows('ab 20ms |', v, windowSession(5, { key: keyOf, idleTimeout: 5 }), '6ms (xy) 12ms |', {
      x: 'k1[0,5):a',
      y: 'k2[2,7):b',
    })
  })

  it('emits a session reaching maxMessages early; the next event starts a new session', () => {
    const v = { a: msg('a', 0), b: msg('b', 1), c: msg('c', 2) }
    expectWindows('abc|', v, windowSession(5, { maxMessages: 2 }), '-x-(y|)', { x: '[0,6)!:ab', y: '[2,7):c' })
  })
})

describe('reduceWindow', () => {
  it('reduces each window to a value and settles the window through the result', async () => {
    const v = { a: msg('a', 1), b: msg('b', 2), c: msg('c', 11) }
    const results: { value: string; ack: () => Promise<unknown> }[] = []
    testScheduler().run(({ cold, expectObservable }) => {
      const reduced = cold('abc|', v).pipe(
        windowTumbling(10),
        reduceWindow((ids: string, m: FakeMessage, i) => `${ids}${m.id}${i}`, ''),
        tap((r) => results.push(r)),
        map(show),
      )
      expectObservable(reduced).toBe('--x(y|)', { x: '[0,10):"a0b1"', y: '[10,20):"c0"' })
    })
    expect(results.map((r) => r.value)).toEqual(['a0b1', 'c0'])
    await expect(results[0]!.ack()).resolves.toBe('acked')
    expect([v.a.acks, v.b.acks, v.c.acks]).toEqual([1, 1, 0])
  })
})

describe('types', () => {
  it('adds Late to the output only with late: emit, and requires a timestamp for values without an event', () => {
    const messages = of(msg('a', 1))
    expectTypeOf(messages.pipe(windowTumbling(10))).toEqualTypeOf<Observable<Window<FakeMessage>>>()
    expectTypeOf(messages.pipe(windowSliding(10, 5, { late: 'emit' }))).toEqualTypeOf<Observable<Window<FakeMessage> | Late<FakeMessage>>>()
    const windows = messages.pipe(windowTumbling(10))
    // @ts-expect-error a window has no event.timestamp: pass `timestamp`
    windows.pipe(windowSession(5))
    expectTypeOf(windows.pipe(windowSession(5, { timestamp: (w) => w.start }))).toEqualTypeOf<Observable<Window<Window<FakeMessage>>>>()
  })
})
