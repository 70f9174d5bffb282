import { afterEach, describe, expect, it, vi } from 'vitest'
import { CreditLedger } from '../../src/consumer/credit.js'
import { holdsCredit, isSettleablePhase, step, type LifeEvent, type Phase } from '../../src/consumer/lifecycle.js'
import { MAX_TIMER_MS, setLongTimeout } from '../../src/consumer/timers.js'

const PHASES: readonly Phase[] = ['queued', 'running', 'waiting', 'settling', 'failed', 'done', 'withdrawn']
const EVENTS: readonly LifeEvent[] = ['begin', 'ack', 'nack', 'deadLetter', 'stored', 'storeFailed', 'expire', 'giveBack', 'redelivered']

describe('message lifecycle (pure state machine)', () => {
  it('follows delivered → started → settled, and each alternative path', () => {
    expect(step('queued', 'begin')).toBe('running')
    expect(step('running', 'begin')).toBe('running')
    expect(step('running', 'ack')).toBe('settling')
    expect(step('settling', 'stored')).toBe('done')
    expect(step('settling', 'storeFailed')).toBe('failed')
    expect(step('failed', 'ack')).toBe('settling')
    // Not started in time: given back (withdrawn), no delivery counted. Started and timed out: a failed attempt.
    expect(step('queued', 'expire')).toBe('withdrawn')
    expect(step('running', 'expire')).toBe('waiting')
    expect(step('running', 'nack')).toBe('waiting')
    expect(step('waiting', 'redelivered')).toBe('done')
    expect(step('waiting', 'giveBack')).toBe('withdrawn')
  })

  it('a final, waiting or settling copy is never started again', () => {
    for (const phase of ['waiting', 'settling', 'failed', 'done', 'withdrawn'] as const) expect(step(phase, 'begin'), phase).toBeUndefined()
  })

  it('final phases accept no event; settlement only where a holder may settle', () => {
    for (const event of EVENTS) {
      expect(step('done', event)).toBeUndefined()
      expect(step('withdrawn', event)).toBeUndefined()
    }
    expect(PHASES.filter(isSettleablePhase)).toEqual(['queued', 'running', 'failed'])
    // Credit is held until the message is settled, failed or withdrawn.
    expect(PHASES.filter(holdsCredit)).toEqual(['queued', 'running', 'waiting', 'settling'])
  })

  it('every transition leads to a known phase', () => {
    for (const phase of PHASES) for (const event of EVENTS) {
      const next = step(phase, event)
      if (next !== undefined) expect(PHASES).toContain(next)
    }
  })
})

describe('credit ledger', () => {
  it('wakes on every path that frees credit: release, an unused reservation, a larger limit', () => {
    let wakes = 0
    const ledger = new CreditLedger(2, () => wakes++)
    ledger.reserve(2)
    expect(ledger.free).toBe(0)
    ledger.hold(true)
    expect([ledger.held, ledger.reserved, ledger.free]).toEqual([1, 1, 0])
    ledger.unreserve(1)
    expect(wakes).toBe(1)
    expect(ledger.free).toBe(1)
    ledger.release()
    expect(wakes).toBe(2)
    ledger.setLimit(1)
    expect(wakes).toBe(2)
    ledger.setLimit(5)
    expect(wakes).toBe(3)
    expect(ledger.free).toBe(5)
  })
})

describe('long timers', () => {
  afterEach(() => {
    vi.useRealTimers()
  })

  it('waits past 2^31 - 1 ms instead of firing after 1 ms', () => {
    vi.useFakeTimers()
    let fired = false
    setLongTimeout(() => (fired = true), 30 * 24 * 3_600_000)
    vi.advanceTimersByTime(MAX_TIMER_MS)
    expect(fired).toBe(false)
    vi.advanceTimersByTime(30 * 24 * 3_600_000 - MAX_TIMER_MS - 1)
    expect(fired).toBe(false)
    vi.advanceTimersByTime(1)
    expect(fired).toBe(true)
  })

  it('can be cleared across re-arms', () => {
    vi.useFakeTimers()
    let fired = false
    const timer = setLongTimeout(() => (fired = true), 3 * MAX_TIMER_MS)
    vi.advanceTimersByTime(MAX_TIMER_MS + 10)
    timer.clear()
    vi.advanceTimersByTime(3 * MAX_TIMER_MS)
    expect(fired).toBe(false)
  })
})
