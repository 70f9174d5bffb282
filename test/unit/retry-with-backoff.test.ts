import { defer, of, throwError } from 'rxjs'
import { TestScheduler } from 'rxjs/testing'
import { describe, expect, it, vi } from 'vitest'
import { backoffDelay, retryWithBackoff } from '../../operators/retry-with-backoff.js'
import { DecodeError } from '../../src/errors.js'

const scheduler = (): TestScheduler => new TestScheduler((actual, expected) => expect(actual).toEqual(expected))

describe('retryWithBackoff (virtual time)', () => {
  it('re-subscribes after initialDelay * 2^(n-1), then lets the error through', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold('-#')
      const result = source.pipe(retryWithBackoff({ maxRetries: 3, initialDelay: 10, jitter: 0 }))
      // attempt at 0 fails at 1; retries at 1+10, 12+20, 33+40; the last fails at 74
      expectObservable(result).toBe('74ms #')
      expectSubscriptions(source.subscriptions).toBe(['^!', '11ms ^!', '32ms ^!', '73ms ^!'])
    })
  })

  it('caps each delay at maxDelay and honours the multiplier', () => {
    scheduler().run(({ cold, expectSubscriptions, expectObservable }) => {
      const source = cold('#')
      const result = source.pipe(retryWithBackoff({ maxRetries: 4, initialDelay: 10, multiplier: 3, maxDelay: 50, jitter: 0 }))
      // delays 10, 30, 50 (90 capped), 50 (270 capped)
      expectSubscriptions(source.subscriptions).toBe(['(^!)', '10ms (^!)', '40ms (^!)', '90ms (^!)', '140ms (^!)'])
      expectObservable(result).toBe('140ms #')
    })
  })

  it('passes values through and completes without retrying on success', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold('-a-b|')
      expectObservable(source.pipe(retryWithBackoff({ maxRetries: 3, initialDelay: 10, jitter: 0 }))).toBe('-a-b|')
      expectSubscriptions(source.subscriptions).toBe('^---!')
    })
  })

  it('recovers when a retry succeeds', () => {
    scheduler().run(({ expectObservable }) => {
      let attempts = 0
      const source = defer(() => (++attempts < 3 ? throwError(() => new Error('flaky')) : of('ok')))
      expectObservable(source.pipe(retryWithBackoff({ maxRetries: 5, initialDelay: 5, jitter: 0 }))).toBe('15ms (o|)', { o: 'ok' })
    })
  })

  it('never retries bad input (DecodeError) by default, or what shouldRetry refuses', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const bad = new DecodeError('malformed_json', 'x')
      const source = cold('-#', undefined, bad)
      expectObservable(source.pipe(retryWithBackoff({ maxRetries: 3, initialDelay: 10 }))).toBe('-#', undefined, bad)
      expectSubscriptions(source.subscriptions).toBe('^!')
      const other = cold('-#')
      expectObservable(other.pipe(retryWithBackoff({ maxRetries: 3, initialDelay: 10, shouldRetry: () => false }))).toBe('-#')
    })
  })

  it('keeps jittered delays within ±jitter of the exponential delay', () => {
    const random = vi.spyOn(Math, 'random').mockReturnValue(1) // the largest spread: +20 %
    try {
      scheduler().run(({ cold, expectSubscriptions }) => {
        const source = cold('#')
        source.pipe(retryWithBackoff({ maxRetries: 2, initialDelay: 100, jitter: 0.2 })).subscribe({ error: () => undefined })
        expectSubscriptions(source.subscriptions).toBe(['(^!)', '120ms (^!)', '360ms (^!)'])
      })
    } finally {
      random.mockRestore()
    }
  })

  it('computes backoff delays', () => {
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(n, 100, 2, 1_000))).toEqual([100, 200, 400, 800, 1_000])
  })
})
