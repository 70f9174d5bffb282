import { availableParallelism } from 'node:os'
import { defineConfig } from 'vitest/config'
import { LongestFirstSequencer } from './test/support/sequencer.js'

/**
 * Files run in parallel, one more worker than cores: most integration files
 * wait (on Redis, Sentinel timeouts, child processes) far more than they
 * compute, so a worker per core alone leaves the cores idle. Each worker has a
 * shared redis-server of its own (test/support/global-setup.ts) and every test
 * its own random topic and group. `--maxWorkers 1` runs them one at a time.
 */
const maxWorkers = Math.min(Math.max(availableParallelism() + 1, 2), 8)

export default defineConfig({
  test: {
    maxWorkers,
    sequence: { sequencer: LongestFirstSequencer },
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts', 'test/conformance/**/*.test.ts', 'test/faults/**/*.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'simulation',
          include: ['test/simulation/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
})
