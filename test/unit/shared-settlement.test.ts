import { from } from 'rxjs'
import { describe, expect, it } from 'vitest'
import { windowSliding } from '../../operators/window-sliding.js'
import { windowTumbling } from '../../operators/window-tumbling.js'
import type { Window } from '../../operators/window-types.js'
import { CompositeSettleable, holdOpen, onFailure, releaseHold, Share } from '../../src/shared-settlement.js'
import type { Outcome } from '../../src/settle.js'
import { FakeMessage, msg } from './window-fakes.js'

const counts = (m: FakeMessage): [number, number, number] => [m.acks, m.nacks, m.deadLetters]

/** Collects the windows a synchronous source produces. */
function windowsOf(messages: FakeMessage[], operator: 'tumbling' | 'sliding'): Window<FakeMessage>[] {
  const windows: Window<FakeMessage>[] = []
  from(messages)
    .pipe(operator === 'tumbling' ? windowTumbling(10) : windowSliding(10, 5))
    .subscribe((w) => windows.push(w))
  return windows
}

describe('Share', () => {
  it('acks its target when the only share is acked', async () => {
    const m = msg('a', 0)
    await expect(new Share(m).ack()).resolves.toBe('acked')
    expect(counts(m)).toEqual([1, 0, 0])
  })

  it('acks the target only when the last of several shares is acked, once', async () => {
    const m = msg('a', 0)
    const first = new Share(m)
    const second = new Share(m)
    await first.ack()
    expect(m.acks).toBe(0)
    await second.ack()
    await second.ack()
    await first.ack()
    expect(counts(m)).toEqual([1, 0, 0])
    expect([first.outcome, second.outcome]).toEqual(['acked', 'acked'])
  })

  it('fails the target at once on the first nack; the other shares leave it alone (first failure wins)', async () => {
    const m = msg('a', 0)
    const [first, second, third] = [new Share(m), new Share(m), new Share(m)]
    const error = new Error('boom')
    await expect(first.nack(error, { delay: 50 })).resolves.toBe('nacked')
    expect(counts(m)).toEqual([0, 1, 0])
    expect(m.reasons).toEqual([error])
    expect(m.nackOptions).toEqual([{ delay: 50 }])
    await second.deadLetter('later reason')
    await third.ack()
    expect(counts(m)).toEqual([0, 1, 0])
    expect([first.outcome, second.outcome, third.outcome]).toEqual(['nacked', 'dead-lettered', 'acked'])
  })

  it('fails the target even after other shares were acked', async () => {
    const m = msg('a', 0)
    const [first, second] = [new Share(m), new Share(m)]
    await first.ack()
    await second.deadLetter('poison')
    expect(counts(m)).toEqual([0, 0, 1])
    expect(m.reasons).toEqual(['poison'])
  })

  it('is idempotent: a settled share keeps its first outcome', async () => {
    const m = msg('a', 0)
    const share = new Share(m)
    new Share(m) // another holder keeps the message pending
    const first = share.nack(new Error('x'))
    expect(share.ack()).toBe(first)
    await expect(share.deadLetter('y')).resolves.toBe('nacked')
    expect(counts(m)).toEqual([0, 1, 0])
  })

  it("rejects with the target's settlement error", async () => {
    const m = msg('a', 0)
    m.ack = () => Promise.reject(new Error('connection lost'))
    await expect(new Share(m).ack()).rejects.toThrow('connection lost')
  })
})

describe('CompositeSettleable', () => {
  it('settles every constituent and resolves its own outcome once (first call wins)', async () => {
    const [a, b] = [msg('a', 0), msg('b', 1)]
    const composite = new CompositeSettleable([new Share(a), new Share(b)])
    expect(composite.outcome).toBeUndefined()
    const acked = composite.ack()
    expect(composite.outcome).toBe('acked')
    expect(composite.nack(new Error('too late'))).toBe(acked)
    await expect(acked).resolves.toBe('acked')
    expect([counts(a), counts(b)]).toEqual([
      [1, 0, 0],
      [1, 0, 0],
    ])
    expect(composite.constituents).toEqual([a, b])
  })

  it('dead-letters every constituent with the reason', async () => {
    const [a, b] = [msg('a', 0), msg('b', 1)]
    await new CompositeSettleable([new Share(a), new Share(b)]).deadLetter('bad window')
    expect([a.reasons, b.reasons]).toEqual([['bad window'], ['bad window']])
  })
})

describe('settling windows', () => {
  it('acks every constituent of a window exactly once', async () => {
    const messages = [msg('a', 1), msg('b', 2), msg('c', 3), msg('d', 12)]
    const windows = windowsOf(messages, 'tumbling')
    expect(windows.map((w) => w.messages.length)).toEqual([3, 1])
    for (const m of messages) expect(m.calls).toBe(0)
    const outcomes: Outcome[] = await Promise.all([windows[0]!.ack(), windows[0]!.ack(), windows[0]!.nack('ignored')])
    expect(outcomes).toEqual(['acked', 'acked', 'acked'])
    expect(messages.map(counts)).toEqual([
      [1, 0, 0],
      [1, 0, 0],
      [1, 0, 0],
      [0, 0, 0],
    ])
  })

  it('acks a message in two sliding windows only when both windows are settled', async () => {
    const a = msg('a', 7) // in [0, 10) and [5, 15)
    const windows = windowsOf([a], 'sliding')
    expect(windows.map((w) => [w.start, w.end])).toEqual([
      [0, 10],
      [5, 15],
    ])
    await windows[1]!.ack()
    expect(a.acks).toBe(0)
    await windows[0]!.ack()
    expect(counts(a)).toEqual([1, 0, 0])
  })

  it('nacks a message in two sliding windows as soon as one window is nacked', async () => {
    const a = msg('a', 7)
    const windows = windowsOf([a], 'sliding')
    await windows[0]!.nack(new Error('handler failed'))
    expect(counts(a)).toEqual([0, 1, 0])
    await windows[1]!.ack()
    expect(counts(a)).toEqual([0, 1, 0])
  })

  it('keeps a message emitted early in one window pending while another open window holds it', async () => {
    const a = msg('a', 7)
    const b = msg('b', 8)
    const windows: Window<FakeMessage>[] = []
    // [0, 10) closes while [5, 15) still holds a and b: acking it acks nothing yet; [5, 15) then fills up (early)
    from([a, b, msg('c', 11)])
      .pipe(windowSliding(10, 5, { maxMessages: 3 }))
      .subscribe((w) => {
        windows.push(w)
        void w.ack()
        if (w.start === 0) expect([a.acks, b.acks]).toEqual([0, 0])
      })
    await Promise.resolve()
    expect(windows.map((w) => `${w.start}${w.early ? '!' : ''}`)).toEqual(['0', '5!', '10'])
    expect([a.acks, b.acks]).toEqual([1, 1])
  })
})

describe('holds', () => {
  it('holds a message while any open window holds it and releases it with the time of the last release', () => {
    const m = msg('a', 0)
    holdOpen(m)
    holdOpen(m)
    releaseHold(m, 100)
    releaseHold(m, 200)
    releaseHold(m, 300) // not held: ignored
    expect(m.holds).toEqual([Number.POSITIVE_INFINITY, 200])
  })

  it('holds the constituents of a composite value', () => {
    const [a, b] = [msg('a', 0), msg('b', 1)]
    const pair = new CompositeSettleable([new Share(a), new Share(b)])
    holdOpen(pair)
    releaseHold(pair, 42)
    expect([a.holds, b.holds]).toEqual([
      [Number.POSITIVE_INFINITY, 42],
      [Number.POSITIVE_INFINITY, 42],
    ])
  })
})

describe('holders per stream entry (issue 12, item 3)', () => {
  it('counts two views of one delivery as one entry: acked only when both holders settled', async () => {
    const m = msg('a', 0)
    const first = new Share(m.view())
    const second = new Share(m.view())
    await first.ack()
    expect(m.acks).toBe(0)
    await second.ack()
    expect(m.acks).toBe(1)
  })

  it('counts a redelivered copy apart: the failed delivery does not fail its redelivery', async () => {
    const m = msg('a', 0)
    await new Share(m).nack(new Error('boom'))
    const again = m.redelivered()
    await new Share(again).ack()
    expect([m.nacks, again.acks]).toEqual([1, 1])
  })

  it('tells watchers once when a holder fails the entry', async () => {
    const m = msg('a', 0)
    const calls: string[] = []
    new Share(m) // another holder
    const stop = onFailure(m.view(), () => calls.push('failed'))
    await new Share(m).deadLetter('poison')
    await new Share(m).nack('again')
    stop()
    expect(calls).toEqual(['failed'])
  })
})
