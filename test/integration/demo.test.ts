/**
 * The quickstart (`npm run demo`) runs to the end on Redis and, when no Redis
 * answers, on the in-memory backend.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { redisUrl } from '../support/redis.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const TIMEOUT_MS = 45_000

interface RunResult {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/** The environment without any EVENT_* variable, plus `extra`. */
function environment(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [name, value] of Object.entries(process.env)) if (!name.startsWith('EVENT_') && name !== 'DEMO_REDIS_PROBE') env[name] = value
  return { ...env, ...extra }
}

/** Runs `npx tsx examples/quickstart.ts`, killing it after TIMEOUT_MS. */
function runDemo(env: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('npx', ['tsx', 'examples/quickstart.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`the demo did not exit within ${TIMEOUT_MS} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`))
    }, TIMEOUT_MS)
    child.once('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

const explain = (r: RunResult): string => `exit ${String(r.code)} ${String(r.signal)}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`

describe.concurrent('quickstart demo', () => {
  it('runs on Redis when EVENT_REDIS_URL is set', async () => {
    const result = await runDemo(environment({ EVENT_REDIS_URL: redisUrl() }))
    expect(result.code, explain(result)).toBe(0)
    expect(result.stdout).toContain('backend: Redis')
    expect(result.stdout).toMatch(/^done$/m)
  })

  it('says which Redis without its password, and what matchPattern skipped', async () => {
    const url = new URL(redisUrl())
    url.username = 'default'
    url.password = 'sw0rdfish-in-url'
    const result = await runDemo(environment({ EVENT_REDIS_URL: url.toString() }))
    expect(result.code, explain(result)).toBe(0)
    expect(result.stdout).toMatch(new RegExp(`^backend: Redis at redis://${url.hostname}:${url.port} \\(EVENT_REDIS_URL\\)$`, 'm'))
    expect(result.stdout).toMatch(/^matchPattern passed 3 of 5 events on; the other 2 \(user\.signup from mobile, user\.login\) were acked and skipped$/m)
    expect(result.stdout + result.stderr).not.toContain('sw0rdfish')
  })

  it('says in-memory, not Redis, with EVENT_REDIS_URL=memory://', async () => {
    const result = await runDemo(environment({ EVENT_REDIS_URL: 'memory://' }))
    expect(result.code, explain(result)).toBe(0)
    expect(result.stdout).toMatch(/^backend: in-memory \(EVENT_REDIS_URL=memory:\/\/\)$/m)
    expect(result.stdout).not.toContain('Redis at')
    expect(result.stdout).toMatch(/^matchPattern passed 3 of 5 events on; the other 2 .* were acked and skipped$/m)
    expect(result.stdout).toMatch(/^done$/m)
  })

  it('falls back to the in-memory backend when no Redis answers', async () => {
    const result = await runDemo(environment({ DEMO_REDIS_PROBE: '127.0.0.1:1' }))
    expect(result.code, explain(result)).toBe(0)
    expect(result.stdout).toContain('backend: in-memory')
    expect(result.stdout).toMatch(/^done$/m)
  })
})
