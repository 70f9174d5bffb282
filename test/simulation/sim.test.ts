/**
 * The deterministic simulation over a fixed seed set (issue #11): the real
 * engine over the memory backend in virtual time, with crashes, restarts,
 * unsubscribes, closes and backend faults; every invariant checked per seed.
 * A failing seed prints its violations and the command that replays it.
 */
import { describe, expect, it } from 'vitest'
import { replayCommand, runSeed } from './harness.js'
import { ciSeeds } from './seeds.js'

const CHUNK = 50
const seeds = ciSeeds()

describe('deterministic simulation', () => {
  it('replays one seed exactly: same trace, same timers', async () => {
    for (const seed of [seeds[0]!, seeds[1]!, seeds[2]!]) {
      const a = await runSeed(seed)
      const b = await runSeed(seed)
      expect(b.fingerprint, `seed ${seed}`).toBe(a.fingerprint)
      expect(b.timersFired).toBe(a.timersFired)
    }
  })

  for (let from = 0; from < seeds.length; from += CHUNK) {
    const chunk = seeds.slice(from, from + CHUNK)
    it(`holds every invariant for seeds ${chunk[0]}..${chunk[chunk.length - 1]}`, { timeout: 120_000 }, async () => {
      const failures: string[] = []
      for (const seed of chunk) {
        const result = await runSeed(seed)
        if (result.violations.length > 0) failures.push(`seed ${seed} (replay: ${replayCommand(seed)}):\n    ${result.violations.join('\n    ')}`)
      }
      expect(failures, failures.join('\n')).toEqual([])
    })
  }
})
