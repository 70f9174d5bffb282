import { map, NEVER, Observable, of, Subject, tap } from 'rxjs'
import { describe, expect, expectTypeOf, it } from 'vitest'
import { joinWithin, type JoinWithinOptions } from '../../operators/join-within.js'
import { UnmatchedJoinError, LateEventError, type JoinedPair, type JoinType } from '../../operators/window-types.js'
import { FakeMessage, keyOf, msg, showPair, testScheduler } from './window-fakes.js'

type Pair = JoinedPair<FakeMessage | undefined, FakeMessage | undefined>
type Options = Omit<JoinWithinOptions<FakeMessage, FakeMessage, JoinType>, 'leftKey' | 'rightKey'>

/** Joins `left` and `right` marbles on the key header and checks the results (as `showPair` strings). */
function expectJoin(
  left: string,
  right: string,
  values: Record<string, FakeMessage>,
  options: Options,
  expected: string,
  pairs: Record<string, string>,
  emitted: Pair[] = [],
): void {
  testScheduler().run(({ cold, expectObservable }) => {
    const joined = cold(left, values).pipe(
      joinWithin(cold(right, values), { leftKey: keyOf, rightKey: keyOf, ...options }),
      tap((pair) => emitted.push(pair)),
      map(showPair),
    )
    expectObservable(joined).toBe(expected, pairs)
  })
}

describe('joinWithin', () => {
  describe('inner', () => {
    // a@0 on the left; x@3, y@5, z@6 on the right, w@3 with another key
    const scenario = () => ({ a: msg('a', 0, 'k'), x: msg('x', 3, 'k'), y: msg('y', 5, 'k'), z: msg('z', 6, 'k'), w: msg('w', 3, 'k2') })

    it('pairs every match within `within`, boundary included, as soon as the second event arrives', () => {
      const v = scenario()
      expectJoin('a------|', '-xwy-z-|', v, { within: 5 }, '-p-q---|', { p: 'a+x', q: 'a+y' })
      // |6 - 0| > 5: z has no partner; w has another key
    })

    it('acks an event only when every pair holding it is settled', async () => {
      const v = scenario()
      const pairs: Pair[] = []
      expectJoin('a------|', '-xwy-z-|', v, { within: 5 }, '-p-q---|', { p: 'a+x', q: 'a+y' }, pairs)
      expect(v.a.acks).toBe(0) // out of the buffer, but both pairs hold it
      await pairs[0]!.ack()
      expect([v.a.acks, v.x.acks]).toEqual([0, 1])
      await pairs[1]!.ack()
      expect([v.a.acks, v.y.acks]).toEqual([1, 1])
      await pairs[1]!.ack() // idempotent
      expect(v.a.acks).toBe(1)
    })

    it('acks unmatched events once their window has passed, or dead-letters them by option', () => {
      const acked = scenario()
      expectJoin('a------|', '-xwy-z-|', acked, { within: 5 }, '-p-q---|', { p: 'a+x', q: 'a+y' })
      expect([acked.z.acks, acked.w.acks]).toEqual([1, 1])
      const dead = scenario()
      expectJoin('a------|', '-xwy-z-|', dead, { within: 5, unmatched: 'deadLetter' }, '-p-q---|', { p: 'a+x', q: 'a+y' })
      expect([dead.z.acks, dead.z.deadLetters]).toEqual([0, 1])
      expect(dead.z.reasons[0]).toBeInstanceOf(UnmatchedJoinError)
      expect(dead.a.calls).toBe(0) // matched: settled through its pairs only
    })

    it('emits a pair for each partner on both sides', () => {
      const v = { a: msg('a', 0, 'k'), b: msg('b', 2, 'k'), x: msg('x', 1, 'k'), y: msg('y', 4, 'k') }
      expectJoin('a-b---|', '-x--y-|', v, { within: 2 }, '-pq-r-|', { p: 'a+x', q: 'b+x', r: 'b+y' })
    })
  })

  describe('left', () => {
    it("emits an unmatched left event with an empty right side once the right side's stream time passes time + within + grace", () => {
      // a@0 expires when the right side's stream time passes 5: not at x@5, at y@6
      const v = { a: msg('a', 0, 'k'), x: msg('x', 5, 'k2'), y: msg('y', 6, 'k2') }
      expectJoin('a------|', '-x-y---|', v, { within: 5, grace: 0, type: 'left' }, '---u---|', { u: 'a+_' })
      expect([v.x.acks, v.y.acks]).toEqual([1, 1]) // unmatched right events of a left join are acked
    })

    it('emits no empty-side result for an event that finds its partner within the window, even out of order', () => {
      // grace 3: y@4 arrives after x@7 moved stream time to 7, still matches a@0
      const v = { a: msg('a', 0, 'k'), b: msg('b', 5, 'k2'), x: msg('x', 7, 'k'), y: msg('y', 4, 'k'), z: msg('z', 9, 'k') }
      expectJoin('a-b----|', '-x-y-z-|', v, { within: 5, grace: 3, type: 'left' }, '---p---(u|)', { p: 'a+y', u: 'b+_' })
    })

    it('settles an unmatched result like a message', async () => {
      const v = { a: msg('a', 0, 'k') }
      const pairs: Pair[] = []
      expectJoin('a|', '-|', v, { within: 5, type: 'left' }, '-(u|)', { u: 'a+_' }, pairs)
      expect(v.a.calls).toBe(0)
      await pairs[0]!.deadLetter('no payment')
      expect(v.a.reasons).toEqual(['no payment'])
    })
  })

  describe('outer', () => {
    it('emits pairs and the unmatched events of both sides', () => {
      const v = { a: msg('a', 0, 'k'), b: msg('b', 20, 'k'), x: msg('x', 2, 'k'), y: msg('y', 10, 'k2') }
      const emitted: Pair[] = []
      expectJoin('a---b--|', '-x-y---|', v, { within: 5, grace: 0, type: 'outer' }, '-p--u--(v|)', { p: 'a+x', u: '_+y', v: 'b+_' }, emitted)
      // b+_ came out because the right input completed: flagged partial; _+y expired on time
      expect(emitted.map((pair) => pair.partial)).toEqual([false, false, true])
    })
  })

  it('dead-letters an event more than grace behind stream time, or acks it by option', () => {
    const dead = { a: msg('a', 10, 'k'), b: msg('b', 2, 'k') }
    expectJoin('a-b|', '---|', dead, { within: 10, grace: 0 }, '---|', {})
    expect(dead.b.deadLetters).toBe(1)
    expect(dead.b.reasons[0]).toBeInstanceOf(LateEventError)
    const acked = { a: msg('a', 10, 'k'), b: msg('b', 2, 'k') }
    expectJoin('a-b|', '---|', acked, { within: 10, late: 'ack' }, '---|', {})
    expect(acked.b.acks).toBe(1)
    const inGrace = { a: msg('a', 10, 'k'), b: msg('b', 2, 'k'), x: msg('x', 9, 'k') }
    expectJoin('a-b|', '---(x|)', inGrace, { within: 10, grace: 8 }, '---(pq|)', { p: 'a+x', q: 'b+x' })
  })

  it('expires buffered events by the clock when idle, even with no event on the other side', () => {
    const v = { a: msg('a', 0, 'k') }
    // The right side has no stream time: it counts as the left's minus within + grace (a right event further behind
    // would be late). a@0 expires once that passes 0 + 5, i.e. left stream time 11, reached by the clock at frame 11.
    expectJoin('a 20ms |', '21ms |', v, { within: 5, grace: 0, type: 'left', idleTimeout: 5 }, '11ms u 9ms |', { u: 'a+_' })
    expect(v.a.holds).toEqual([Number.POSITIVE_INFINITY, 11])
  })

  it('expires the oldest event of a side early when the side holds maxOpenMessages', () => {
    const v = { a: msg('a', 0, 'k1'), b: msg('b', 1, 'k2') }
    expectJoin('ab-|', '---|', v, { within: 5, type: 'left', maxOpenMessages: 2 }, '-u-(v|)', { u: 'a+_', v: 'b+_' })
  })

  it('emits each pair once when a pair makes a synchronous source emit a new partner', () => {
    const lefts = new Subject<FakeMessage>()
    const rights = new Subject<FakeMessage>()
    const [a, x, y] = [msg('a', 1, 'k'), msg('x', 1, 'k'), msg('y', 2, 'k')]
    const seen: string[] = []
    lefts.pipe(joinWithin(rights, { leftKey: keyOf, rightKey: keyOf, within: 5 })).subscribe((pair) => {
      seen.push(showPair(pair))
      if (pair.right === x) rights.next(y)
    })
    rights.next(x)
    lefts.next(a)
    expect(seen).toEqual(['a+x', 'a+y'])
  })

  it('settles nothing on error or unsubscribe', () => {
    const v = { a: msg('a', 0, 'k'), x: msg('x', 3, 'k2') }
    testScheduler().run(({ cold, expectObservable }) => {
      const joined = cold('a-#', v).pipe(joinWithin(cold('-x-', v), { leftKey: keyOf, rightKey: keyOf, within: 5, type: 'outer' }))
      expectObservable(joined.pipe(map(showPair))).toBe('--#')
    })
    testScheduler().run(({ cold, expectObservable }) => {
      const joined = cold('a----', v).pipe(joinWithin(cold('-x---', v), { leftKey: keyOf, rightKey: keyOf, within: 5, type: 'outer' }))
      expectObservable(joined.pipe(map(showPair)), '^--!').toBe('---')
    })
    expect(v.a.calls + v.x.calls).toBe(0)
    expect(v.a.holds).toEqual([Number.POSITIVE_INFINITY, 2, Number.POSITIVE_INFINITY, 3]) // released on error, then on unsubscribe
  })

  it('types the empty sides by join type and requires timestamps for values without an event', () => {
    const left = of(msg('a', 1))
    const right = of(msg('x', 1))
    const base = { leftKey: keyOf, rightKey: keyOf, within: 5 }
    expectTypeOf(left.pipe(joinWithin(right, base))).toEqualTypeOf<Observable<JoinedPair<FakeMessage, FakeMessage>>>()
    expectTypeOf(left.pipe(joinWithin(right, { ...base, type: 'left' }))).toEqualTypeOf<
      Observable<JoinedPair<FakeMessage, FakeMessage> | JoinedPair<FakeMessage, undefined>>
    >()
    expectTypeOf(left.pipe(joinWithin(right, { ...base, type: 'outer' }))).toEqualTypeOf<
      Observable<JoinedPair<FakeMessage, FakeMessage> | JoinedPair<FakeMessage, undefined> | JoinedPair<undefined, FakeMessage>>
    >()
    const pairs: Observable<JoinedPair<FakeMessage, FakeMessage>> = NEVER
    const pairKey = (p: JoinedPair<FakeMessage, FakeMessage>): string => p.key
    // @ts-expect-error a pair has no event.timestamp: pass leftTimestamp
    left.pipe(joinWithin(pairs, { leftKey: keyOf, rightKey: pairKey, within: 5 }))
    left.pipe(joinWithin(pairs, { leftKey: keyOf, rightKey: pairKey, within: 5, rightTimestamp: (p) => p.timestamp }))
  })
})
