/**
 * The simulation's own foundations: the virtual clock orders timers exactly
 * (time, then creation), drains microtasks between them, re-arms intervals and
 * refreshed timeouts, fakes Date and performance.now, and reports a spin; the
 * PRNG is deterministic per seed.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { SpinError, VirtualClock } from './clock.js'
import { Prng } from './prng.js'

let clock: VirtualClock | undefined

afterEach(() => {
  clock?.uninstall()
  clock = undefined
})

describe('VirtualClock', () => {
  it('fires timers in time order, ties in creation order, with microtasks drained between them', async () => {
    clock = new VirtualClock(1_000)
    clock.install()
    const log: string[] = []
    setTimeout(() => log.push('b@20'), 20)
    setTimeout(() => {
      log.push('a@10')
      void Promise.resolve().then(() => log.push('a@10 microtask'))
    }, 10)
    setTimeout(() => log.push('c@10'), 10)
    setImmediate(() => log.push('immediate'))
    await clock.runUntil(1_100)
    expect(log).toEqual(['immediate', 'a@10', 'a@10 microtask', 'c@10', 'b@20'])
    expect(clock.now()).toBe(1_100)
    expect(Date.now()).toBe(1_100)
    expect(new Date().getTime()).toBe(1_100)
    expect(performance.now()).toBe(1_100)
  })

  it('re-arms intervals, honours clearTimeout and refresh()', async () => {
    clock = new VirtualClock(0)
    clock.install()
    const ticks: number[] = []
    const interval = setInterval(() => ticks.push(Date.now()), 30)
    const cleared = setTimeout(() => ticks.push(-1), 50)
    clearTimeout(cleared)
    const refreshed = setTimeout(() => ticks.push(1_000 + Date.now()), 40)
    setTimeout(() => refreshed.refresh(), 20) // now due at 60
    await clock.runUntil(100)
    clearInterval(interval)
    await clock.runUntil(200)
    expect(ticks).toEqual([30, 1_060, 60, 90])
  })

  it('stops a spin: timers firing without time moving', async () => {
    clock = new VirtualClock(0)
    clock.install()
    const spin = (): void => void setTimeout(spin, 0)
    spin()
    await expect(clock.runUntil(10, () => false, 1_000)).rejects.toBeInstanceOf(SpinError)
  })

  it('restores the real globals', () => {
    const real = globalThis.setTimeout
    const c = new VirtualClock(5)
    c.install()
    expect(globalThis.setTimeout).not.toBe(real)
    c.uninstall()
    expect(globalThis.setTimeout).toBe(real)
    expect(Date.now()).toBeGreaterThan(1_600_000_000_000)
  })
})

describe('Prng', () => {
  it('gives one sequence per seed', () => {
    const a = new Prng(42)
    const b = new Prng(42)
    const c = new Prng(43)
    const seqA = Array.from({ length: 5 }, () => a.u32())
    expect(Array.from({ length: 5 }, () => b.u32())).toEqual(seqA)
    expect(Array.from({ length: 5 }, () => c.u32())).not.toEqual(seqA)
    for (let i = 0; i < 1_000; i++) {
      const x = a.int(3, 7)
      expect(x >= 3 && x <= 7).toBe(true)
    }
  })
})
