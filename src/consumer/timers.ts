/** The longest delay Node's timers accept (2^31 − 1 ms, about 24.8 days); longer ones fire after 1 ms. */
export const MAX_TIMER_MS = 2_147_483_647

/** A timer that may wait longer than {@link MAX_TIMER_MS}: it re-arms itself until `ms` have passed. */
export interface LongTimer {
  clear(): void
}

/**
 * `setTimeout` for any delay: waits past 2^31 − 1 ms by re-arming capped
 * timers until the due time (by `Date.now()`) has come.
 */
export function setLongTimeout(callback: () => void, ms: number, unref = false): LongTimer {
  const dueAt = Date.now() + Math.max(0, ms)
  let timer: NodeJS.Timeout | undefined
  const arm = (delay: number): void => {
    timer = setTimeout(() => {
      const left = dueAt - Date.now()
      if (left > 0) arm(left)
      else callback()
    }, Math.min(MAX_TIMER_MS, Math.max(0, delay)))
    if (unref) timer.unref()
  }
  arm(ms)
  return { clear: () => clearTimeout(timer) }
}
