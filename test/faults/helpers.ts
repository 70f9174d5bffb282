/**
 * Helpers of the fault tests: fixture processes, their ledger, and a look at
 * a group's pending entries on a private Redis.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Writable } from 'node:stream'
import { pino, type Logger } from 'pino'
import type { Redis } from 'ioredis'
import type { FixtureConfig, LedgerLine } from './fixtures/consumer.js'

const FIXTURE = fileURLToPath(new URL('./fixtures/consumer.ts', import.meta.url))
const ROOT = fileURLToPath(new URL('../../', import.meta.url))

const children = new Set<ChildProcess>()
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL')
})

/** A fixture process. */
export interface Fixture {
  readonly child: ChildProcess
  /** Resolves with the exit code or signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  kill(signal?: NodeJS.Signals): void
  /** SIGTERM (graceful close), then SIGKILL after `ms`. */
  stop(ms?: number): Promise<void>
}

/** Starts `test/faults/fixtures/consumer.ts` in a process of its own (node --import tsx). */
export function startFixture(config: FixtureConfig): Fixture {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE], {
    cwd: ROOT,
    env: { ...process.env, FIXTURE: JSON.stringify(config) },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  children.add(child)
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => {
    if (stderr.length < 4_000) stderr += chunk.toString('utf8')
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child)
      if (code !== 0 && code !== null && stderr.length > 0) process.stderr.write(`fixture ${child.pid ?? '?'} exited ${code}: ${stderr}\n`)
      resolve({ code, signal })
    })
  })
  return {
    child,
    exited,
    kill: (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    },
    stop: async (ms = 5_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), ms)
      await exited
      clearTimeout(timer)
    },
  }
}

/** A temporary directory with a ledger file path; `cleanup()` removes it. */
export function tempLedger(): { path: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'rrs-ledger-'))
  return { path: join(dir, 'ledger.jsonl'), cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

/** Every complete line of the ledger. */
export function readLedger(path: string): LedgerLine[] {
  if (!existsSync(path)) return []
  const out: LedgerLine[] = []
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.length === 0) continue
    try {
      out.push(JSON.parse(line) as LedgerLine)
    } catch {
      // a line cut by SIGKILL mid-write
    }
  }
  return out
}

/** Pending entries of a group per consumer (XPENDING summary). */
export async function pendingByConsumer(redis: Redis, key: string, group: string): Promise<{ total: number; byConsumer: Map<string, number> }> {
  const summary = (await redis.xpending(key, group)) as [number, unknown, unknown, [string, string][] | null]
  const byConsumer = new Map<string, number>()
  for (const [name, count] of summary[3] ?? []) byConsumer.set(name, Number(count))
  return { total: summary[0], byConsumer }
}

/** A pino logger (level warn) that counts lines per level and per second. */
export function countingLogger(): { logger: Logger; lines: { level: number; time: number; msg: string }[] } {
  const lines: { level: number; time: number; msg: string }[] = []
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const text of chunk.toString('utf8').split('\n')) {
        if (text.length === 0) continue
        const record = JSON.parse(text) as { level: number; time: number; msg: string }
        lines.push({ level: record.level, time: record.time, msg: record.msg })
      }
      callback()
    },
  })
  return { logger: pino({ level: 'warn' }, sink), lines }
}

/** The largest number of lines in any one-second window. */
export function maxPerSecond(times: readonly number[]): number {
  const sorted = [...times].sort((a, b) => a - b)
  let best = 0
  let start = 0
  for (let end = 0; end < sorted.length; end++) {
    while ((sorted[end] as number) - (sorted[start] as number) >= 1_000) start++
    best = Math.max(best, end - start + 1)
  }
  return best
}

/** The p-th percentile (0..100) of numbers. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number
}

/** The millisecond part of a stream id. */
export const idMs = (id: string): number => Number(id.split('-')[0])

export const streamKey = (topic: string): string => `event:stream:{${topic}}`
export const dlqKey = (topic: string): string => `event:dlq:{${topic}}`
