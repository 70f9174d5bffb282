/**
 * The fixed seed set of CI: the first {@link CI_SEED_COUNT} seeds from 1 that
 * are not listed in known-failing.json (seeds that show an open engine bug;
 * they are replayed by hand with `npm run sim -- --seed S`, not in CI).
 */
import { readFileSync } from 'node:fs'

export const CI_SEED_COUNT = 500

export interface KnownFailing {
  readonly seed: number
  readonly violation: string
  readonly diagnosis: string
}

export function knownFailing(): KnownFailing[] {
  const text = readFileSync(new URL('./known-failing.json', import.meta.url), 'utf8')
  return (JSON.parse(text) as { seeds: KnownFailing[] }).seeds
}

export function ciSeeds(count = CI_SEED_COUNT): number[] {
  const skip = new Set(knownFailing().map((k) => k.seed))
  const seeds: number[] = []
  for (let seed = 1; seeds.length < count; seed++) if (!skip.has(seed)) seeds.push(seed)
  return seeds
}
