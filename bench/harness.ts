/** Helpers shared by the benchmark and the profiler: a child process per measurement, medians. */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { ChildResult, ChildSpec } from './child.js'

const CHILD = fileURLToPath(new URL('./child.ts', import.meta.url))

/**
 * Runs one scenario in a fresh Node process and resolves to its result.
 * `extraEnv` is added to the child's environment (e.g. `BENCH_CPU_PROFILE`);
 * `childScript` is another checkout's bench/child.ts (see ab.ts).
 */
export function runChild(spec: ChildSpec, extraEnv: Readonly<Record<string, string>> = {}, childScript: string = CHILD): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, ['--import', 'tsx', childScript, JSON.stringify(spec)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, ...extraEnv },
    })
    let out = ''
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()))
    proc.on('error', reject)
    proc.on('exit', (code) => {
      if (code !== 0) {
        reject(new Error(`${spec.kind}/${spec.side} child exited with ${String(code)}`))
        return
      }
      const last = out.trim().split('\n').pop() ?? '{}'
      resolve(JSON.parse(last) as ChildResult)
    })
  })
}

/** The median of some numbers (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

/** `items` rotated left by `by` (interleaving: each run starts with a different side). */
export function rotate<T>(items: readonly T[], by: number): T[] {
  const k = items.length === 0 ? 0 : by % items.length
  return [...items.slice(k), ...items.slice(0, k)]
}
