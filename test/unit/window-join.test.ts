import { filter, map, Observable, share, Subject, tap } from 'rxjs'
import { describe, expect, it } from 'vitest'
import { joinWithin } from '../../operators/join-within.js'
import type { JoinedPair } from '../../operators/window-types.js'
import { creditLimit } from '../../src/shared-settlement.js'
import { FakeMessage, keyOf, msg, showPair, testScheduler } from './window-fakes.js'

type Pair = JoinedPair<FakeMessage | undefined, FakeMessage | undefined>

describe('joinWithin and failed messages (issue 12, item 4)', () => {
  it('a nacked message leaves every join buffer at once: after a nacked pair is redelivered, one retried pair comes out', async () => {
    const lefts = new Subject<FakeMessage>()
    const rights = new Subject<FakeMessage>()
    const pairs: Pair[] = []
    lefts.pipe(joinWithin(rights, { leftKey: keyOf, rightKey: keyOf, within: 5 })).subscribe((pair) => pairs.push(pair))
    const l = msg('L', 1, 'k')
    const r = msg('R', 2, 'k')
    lefts.next(l)
    rights.next(r)
    expect(pairs.map(showPair)).toEqual(['L+R'])
    await pairs[0]!.nack(new Error('handler failed'))
    expect([l.nacks, r.nacks]).toEqual([1, 1])
    const [l2, r2] = [l.redelivered(), r.redelivered()]
    lefts.next(l2)
    rights.next(r2)
    expect(pairs.map(showPair)).toEqual(['L+R', 'L+R'])
    expect([pairs[1]!.left, pairs[1]!.right]).toEqual([l2, r2])
    await pairs[1]!.ack()
    lefts.complete()
    rights.complete()
    await Promise.resolve()
    expect([l2.acks, r2.acks]).toEqual([1, 1])
  })

  it('a dead-lettered pair leaves the buffer too: a later partner does not pair with it', async () => {
    const lefts = new Subject<FakeMessage>()
    const rights = new Subject<FakeMessage>()
    const pairs: Pair[] = []
    lefts.pipe(joinWithin(rights, { leftKey: keyOf, rightKey: keyOf, within: 5, type: 'left' })).subscribe((pair) => pairs.push(pair))
    const l = msg('L', 1, 'k')
    lefts.next(l)
    rights.next(msg('R', 2, 'k'))
    await pairs[0]!.deadLetter('poison')
    rights.next(msg('S', 3, 'k'))
    lefts.complete()
    rights.complete()
    expect(pairs.map(showPair)).toEqual(['L+R']) // no L+S, and no unmatched L+_ either
    expect(l.deadLetters).toBe(1)
  })
})

describe('joinWithin on one subscription (issue 12, item 5)', () => {
  it('a join fed from one credit-limited subscription (share + filter) does not deadlock, with no option to set', async () => {
    const credit = 4
    // orders and payments of one subscription whose keys never match
    const messages = Array.from({ length: 20 }, (_, i) => Object.assign(msg(`${i % 2 === 0 ? 'o' : 'p'}${i}`, i * 1_000, `k${i}`), { [creditLimit]: credit }))
    let pulled = 0
    let pending = 0
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
      queueMicrotask(pull) // once both branches subscribed
    }).pipe(share())
    const orders = source.pipe(filter((m) => m.id.startsWith('o')))
    const payments = source.pipe(filter((m) => m.id.startsWith('p')))
    const results: Pair[] = []
    const subscription = orders.pipe(joinWithin(payments, { leftKey: keyOf, rightKey: keyOf, within: 60_000, type: 'left' })).subscribe((pair) => {
      results.push(pair)
      void pair.ack()
    })
    await new Promise((resolve) => setTimeout(resolve, 0))
    subscription.unsubscribe()
    expect(pulled).toBe(20)
    expect(messages.filter((m) => m.acks === 1).length).toBeGreaterThan(20 - credit)
  })
})

describe('joinWithin lateness across two independently read topics (issue 12, item 7)', () => {
  it('keeps every partner when payments run up to 2 minutes ahead of orders (within 5 min, default grace)', () => {
    const minute = 60_000
    const v = {
      a: msg('o1', 0, 'o1'),
      b: msg('o2', 1 * minute, 'o2'),
      c: msg('o3', 2 * minute, 'o3'),
      d: msg('o4', 3 * minute, 'o4'), // never paid
      x: msg('p1', 0.5 * minute, 'o1'),
      y: msg('p2', 1.5 * minute, 'o2'),
      z: msg('p3', 2 * minute, 'o3'),
    }
    const emitted: Pair[] = []
    testScheduler().run(({ cold, expectObservable }) => {
      // every payment is read before the order it pays: the payments topic runs ahead
      const joined = cold('---a-b-c-d|', v).pipe(
        joinWithin(cold('xyz--------|', v), { leftKey: keyOf, rightKey: keyOf, within: 5 * minute, type: 'left' }),
        tap((pair) => emitted.push(pair)),
        map(showPair),
      )
      expectObservable(joined).toBe('---p-q-r---(u|)', { p: 'o1+p1', q: 'o2+p2', r: 'o3+p3', u: 'o4+_' })
    })
    for (const m of Object.values(v)) expect(m.deadLetters).toBe(0)
    expect(emitted.map((pair) => pair.partial)).toEqual([false, false, false, true])
  })

  it('treats an event as late only when its own side is more than grace ahead of it, or the other side more than within + grace', () => {
    const v = { a: msg('a', 100, 'k'), b: msg('b', 10, 'k'), x: msg('x', 0, 'j') }
    testScheduler().run(({ cold, expectObservable }) => {
      const joined = cold('a-b---|', v).pipe(joinWithin(cold('---x|', v), { leftKey: keyOf, rightKey: keyOf, within: 20, grace: 30 }), map(showPair))
      expectObservable(joined).toBe('------|')
    })
    expect(v.b.deadLetters).toBe(1) // 10 + 30 < 100 (its own side)
    expect(v.x.deadLetters).toBe(1) // 0 + 20 + 30 < 100 (the left side)
  })
})

describe('joinWithin on a graceful stop (issue 12, item 10)', () => {
  it('gives buffered messages back at once without emitting them, and completes', () => {
    const lefts = new Subject<FakeMessage>()
    const rights = new Subject<FakeMessage>()
    const pairs: Pair[] = []
    let completed = false
    lefts.pipe(joinWithin(rights, { leftKey: keyOf, rightKey: keyOf, within: 5, type: 'outer' })).subscribe({ next: (p) => pairs.push(p), complete: () => (completed = true) })
    const [l, r] = [msg('L', 1, 'k'), msg('R', 2, 'j')]
    lefts.next(l)
    rights.next(r)
    l.withdrawn = true
    r.withdrawn = true
    lefts.complete()
    rights.complete()
    expect(completed).toBe(true)
    expect(pairs).toEqual([])
    expect([l.released, r.released, l.calls, r.calls]).toEqual([1, 1, 0, 0])
  })
})
