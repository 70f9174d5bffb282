import { defer, from, lastValueFrom, of, Subject, throwError, toArray } from 'rxjs'
import { describe, expect, it } from 'vitest'
import { ackOnComplete, globToRegExp, handleEach, matchPattern, toDeadLetter, type Handled } from '../../operators/index.js'
import type { Message } from '../../src/consumer/message.js'
import { DecodeError } from '../../src/errors.js'
import { FakeMessage } from './window-fakes.js'

const named = (name: string, headers: Record<string, string> = {}): FakeMessage => {
  const m = new FakeMessage(name, 0)
  Object.assign(m, { event: { ...m.event, name, headers } })
  return m
}
const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms))

describe('matchPattern', () => {
  it('matches exact names, globs and headers; acks what does not match', async () => {
    const messages = [named('user.signup', { source: 'web' }), named('user.signup', { source: 'app' }), named('user.a.b', { source: 'web' }), named('order.created', { source: 'web' })]
    const out = await lastValueFrom(of(...messages).pipe(matchPattern({ eventName: 'user.*', headers: { source: 'web' } }), toArray()))
    expect(out).toEqual([messages[0]])
    expect(messages.map((m) => m.acks)).toEqual([0, 1, 1, 1])
  })

  it('leaves mismatches unsettled when asked, and applies the predicate', async () => {
    const messages = [named('a'), named('b')]
    const out = await lastValueFrom(of(...messages).pipe(matchPattern({ predicate: (m) => m.event.name === 'b' }, { onMismatch: 'leave' }), toArray()))
    expect(out).toEqual([messages[1]])
    expect(messages[0]!.outcome).toBeUndefined()
  })

  it('compiles globs: * within a segment, ** across, ? one character, regex characters literal', () => {
    expect(globToRegExp('user.*').test('user.signup')).toBe(true)
    expect(globToRegExp('user.*').test('user.a.b')).toBe(false)
    expect(globToRegExp('user.**').test('user.a.b')).toBe(true)
    expect(globToRegExp('user.?').test('user.x')).toBe(true)
    expect(globToRegExp('a+b.*').test('a+b.c')).toBe(true)
    expect(globToRegExp('a+b.*').test('aab.c')).toBe(false)
  })
})

describe('ackOnComplete and toDeadLetter', () => {
  it('acks on completion, nacks on error, dead-letters bad input, and always completes', async () => {
    const ok = named('ok')
    const failing = named('failing')
    const bad = named('bad')
    await lastValueFrom(of(1).pipe(ackOnComplete(ok)), { defaultValue: undefined })
    await lastValueFrom(throwError(() => new Error('x')).pipe(ackOnComplete(failing)), { defaultValue: undefined })
    await lastValueFrom(throwError(() => new DecodeError('invalid_payload', 'x')).pipe(ackOnComplete(bad)), { defaultValue: undefined })
    expect([ok.acks, failing.nacks, bad.deadLetters]).toEqual([1, 1, 1])
  })

  it('toDeadLetter turns an error into a dead letter and completion; ackOnComplete after it changes nothing', async () => {
    const m = named('m')
    await lastValueFrom(throwError(() => new Error('boom')).pipe(toDeadLetter(m), ackOnComplete(m)), { defaultValue: undefined })
    // A real Message ignores the later ack(); the fake counts the call, but the first outcome stands.
    expect([m.deadLetters, m.outcome]).toEqual([1, 'dead-lettered'])
    expect(String(m.reasons[0])).toContain('boom')
  })
})

describe('handleEach', () => {
  it('retries in process, then dead-letters; acks successes; emits each outcome', async () => {
    const good = named('good')
    const bad = named('bad')
    let badRuns = 0
    const out = await lastValueFrom(
      from<Message<string>[]>([good, bad]).pipe(
        handleEach(
          (m) => {
            if (m.event.name === 'bad') {
              badRuns++
              return Promise.reject(new Error('nope'))
            }
            return undefined
          },
          { concurrency: 2, retry: { maxRetries: 2, initialDelay: 1, jitter: 0 } },
        ),
        toArray(),
      ),
    )
    expect(badRuns).toBe(3)
    expect(out.map((h: Handled) => [h.message.event.name, h.outcome]).sort()).toEqual([
      ['bad', 'dead-lettered'],
      ['good', 'acked'],
    ])
  })

  it('with retry: false a failure nacks (redelivery), bad input dead-letters at once', async () => {
    const flaky = named('flaky')
    const poison = named('poison')
    await lastValueFrom(
      from<Message<string>[]>([flaky, poison]).pipe(
        handleEach((m) => (m.event.name === 'flaky' ? Promise.reject(new Error('later')) : Promise.reject(new DecodeError('malformed_json', 'x'))), { retry: false }),
        toArray(),
      ),
    )
    expect([flaky.nacks, flaky.deadLetters, poison.nacks, poison.deadLetters]).toEqual([1, 0, 0, 1])
  })

  it('never runs more than `concurrency` handlers at once, and accepts Observables', async () => {
    let running = 0
    let peak = 0
    const messages = Array.from({ length: 20 }, (_, i) => named(`m${i}`))
    await lastValueFrom(
      from<Message<string>[]>(messages).pipe(
        handleEach(
          () =>
            defer(async () => {
              running++
              peak = Math.max(peak, running)
              await tick(2)
              running--
            }),
          { concurrency: 3 },
        ),
        toArray(),
      ),
    )
    expect(peak).toBe(3)
    expect(messages.every((m) => m.acks === 1)).toBe(true)
  })

  it('lets a running handler settle after unsubscribe; messages not started stay unsettled', async () => {
    const source = new Subject<Message<string>>()
    const first = named('first')
    const second = named('second')
    let release: () => void = () => undefined
    const gate = new Promise<void>((r) => (release = r))
    const sub = source.pipe(handleEach(() => gate, { concurrency: 1 })).subscribe()
    source.next(first)
    source.next(second)
    sub.unsubscribe()
    release()
    await tick(5)
    expect(first.acks).toBe(1)
    expect(second.outcome).toBeUndefined()
  })

  it('rejects a bad concurrency', () => {
    expect(() => handleEach(() => undefined, { concurrency: 0 })).toThrow(RangeError)
  })
})
