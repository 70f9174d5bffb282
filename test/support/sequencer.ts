/**
 * The order vitest starts test files in: the longest first, so that the slow
 * files (Sentinel failovers, the 500 simulation seeds, the 5,000-event
 * backlogs) run beside the many short ones instead of after them, and the run
 * does not end with one worker busy and the others idle.
 *
 * A file's duration is vitest's own from the last local run when its cache has
 * one, else the committed `test/durations.json` (a clean clone, CI: refresh it
 * with `scripts/test-durations.mjs`), else {@link UNKNOWN_MS}: a new file runs
 * among the mid-length ones. Every project shares one pool, so the order is
 * across projects too.
 */
import { readFileSync } from 'node:fs'
import { relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { BaseSequencer, type TestSpecification } from 'vitest/node'

const ROOT = resolve(fileURLToPath(new URL('../../', import.meta.url)))

/** The assumed duration of a file that is neither in the cache nor in `test/durations.json`. */
const UNKNOWN_MS = 5_000

function committedDurations(): ReadonlyMap<string, number> {
  const table = JSON.parse(readFileSync(resolve(ROOT, 'test/durations.json'), 'utf8')) as Record<string, number>
  return new Map(Object.entries(table).map(([path, seconds]) => [path, seconds * 1_000]))
}

export class LongestFirstSequencer extends BaseSequencer {
  private readonly committed = committedDurations()

  override sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const keyed = files.map((spec) => {
      const path = relative(this.ctx.config.root, spec.moduleId).split('\\').join('/')
      const cached = this.ctx.cache.getFileTestResults(`${spec.project.name}:${path}`)
      const ms = cached?.duration ?? this.committed.get(path) ?? UNKNOWN_MS
      return { spec, ms, path }
    })
    keyed.sort((a, b) => b.ms - a.ms || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
    return Promise.resolve(keyed.map((k) => k.spec))
  }
}
