import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  closeEventManager,
  createEventManager,
  getDeadLetterQueue,
  getEventConsumer,
  getEventManager,
  getEventPublisher,
  newEvent,
  setEventManager,
} from '../../src/index.js'
import { randomName, redisUrl } from '../support/redis.js'
import { waitFor } from '../support/events.js'

const root = fileURLToPath(new URL('../../', import.meta.url))

/** Runs ESM code in a fresh `node --import tsx` process; resolves with its output, exit code and timings. */
function runNode(code: string, env: NodeJS.ProcessEnv, timeoutMs = 20_000): Promise<{ stdout: string; stderr: string; code: number | null; exitedAt: number; lines: Map<string, number> }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: root, env: { ...process.env, ...env } })
    let stdout = ''
    let stderr = ''
    const lines = new Map<string, number>()
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8')
      for (const line of stdout.split('\n')) if (!lines.has(line)) lines.set(line, Date.now())
    })
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`the child did not exit within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`))
    }, timeoutMs)
    child.once('error', reject)
    child.once('exit', (exitCode) => {
      clearTimeout(timer)
      resolve({ stdout, stderr, code: exitCode, exitedAt: Date.now(), lines })
    })
  })
}

describe('global accessors', () => {
  const saved = process.env['EVENT_REDIS_URL']
  beforeAll(() => {
    process.env['EVENT_REDIS_URL'] = redisUrl()
  })
  afterAll(async () => {
    await closeEventManager()
    if (saved === undefined) delete process.env['EVENT_REDIS_URL']
    else process.env['EVENT_REDIS_URL'] = saved
  })

  it('build one default manager from the environment alone, lazily; closing it resets it', async () => {
    const first = getEventManager()
    expect(getEventManager()).toBe(first)
    expect(getEventPublisher()).toBe(first.publisher)
    expect(getEventConsumer()).toBe(first.consumer)
    expect(getDeadLetterQueue()).toBe(first.deadLetters)
    expect(first.config.redis.hosts[0]?.port).toBe(Number(new URL(redisUrl()).port))

    const topic = randomName('globals')
    const seen: unknown[] = []
    const sub = getEventConsumer().subscribe(topic, 'g', (msg) => void seen.push(msg.event.payload))
    await getEventPublisher().publish(topic, newEvent('x', { n: 1 }))
    await waitFor(() => seen.length === 1)
    expect(await getDeadLetterQueue().count(topic)).toBe(0)
    await sub.unsubscribe()

    await first.close()
    const second = getEventManager()
    expect(second).not.toBe(first)
    expect(second.closed).toBe(false)
    await closeEventManager()
    expect(second.closed).toBe(true)
  })

  it('setEventManager replaces the default (tests); closing the replacement resets it too', async () => {
    const memory = createEventManager({ backend: 'memory', env: {} })
    setEventManager(memory)
    expect(getEventManager()).toBe(memory)
    const topic = randomName('mem')
    await getEventPublisher().publish(topic, newEvent('x', 1))
    expect((await memory.stats(topic)).topics[topic]?.length).toBe(1)
    await memory.close()
    const fresh = getEventManager()
    expect(fresh).not.toBe(memory)
    expect(fresh.backend.kind).toBe('redis')
    setEventManager(undefined)
    expect(fresh.closed).toBe(false) // forgotten, not closed
    await fresh.close()
  })
})

describe('close()', () => {
  it('is idempotent and leaves nothing behind: a process that publishes, consumes and closes exits on its own', async () => {
    const topic = randomName('exit')
    const code = `
      import { getEventManager, getEventPublisher, getEventConsumer, getDeadLetterQueue, newEvent } from ${JSON.stringify(`${root}src/index.ts`)}
      const topic = process.env.TOPIC
      const manager = getEventManager()
      const seen = []
      const handled = new Promise((resolve) => {
        getEventConsumer().subscribe(topic, 'workers', (msg) => { seen.push(msg.event.payload); if (seen.length === 3) resolve() })
      })
      manager.consume(topic, { group: 'observers' }).subscribe((msg) => void msg.ack())
      await getEventPublisher().publishBatch(topic, [newEvent('n', 1), newEvent('n', 2), newEvent('n', 3)])
      await getEventPublisher().publishWithDelay(topic, newEvent('later', 4), 60_000)
      await handled
      console.log('handled ' + JSON.stringify(seen))
      console.log('dead letters ' + (await getDeadLetterQueue().count(topic)))
      console.log('healthy ' + (await manager.health()).ok)
      await Promise.all([manager.close(), manager.close()])
      await manager.close()
      console.log('closed ' + manager.closed)
      await new Promise((r) => setTimeout(r, 300))
      const left = process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap' && r !== 'PipeWrap')
      console.log('resources ' + JSON.stringify(left))
    `
    const result = await runNode(code, { EVENT_REDIS_URL: redisUrl(), TOPIC: topic })
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('handled [1,2,3]')
    expect(result.stdout).toContain('dead letters 0')
    expect(result.stdout).toContain('healthy true')
    expect(result.stdout).toContain('closed true')
    const resources = /resources (.*)/.exec(result.stdout)?.[1]
    expect(JSON.parse(resources ?? 'null')).toEqual([])
    const closedAt = result.lines.get('closed true')
    expect(closedAt).toBeDefined()
    expect(result.exitedAt - closedAt!).toBeLessThan(2_000)
  })
})
