import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { newEvent } from '../../src/index.js'
import { freePort } from '../support/redis-server.js'
import { randomName, redisUrl } from '../support/redis.js'
import { testEvents, waitFor } from '../support/events.js'

const root = fileURLToPath(new URL('../../', import.meta.url))

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
  readonly ms: number
}

/** Starts `rx-redis-streams <args>` (from source) against the test Redis. */
function start(args: readonly string[], env: NodeJS.ProcessEnv = {}): { child: ChildProcess; done: Promise<Run>; stderr: () => string } {
  const started = Date.now()
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: root,
    env: { ...process.env, EVENT_REDIS_URL: redisUrl(), ...env },
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')))
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')))
  const done = new Promise<Run>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`rx-redis-streams ${args.join(' ')} did not exit\nstdout: ${stdout}\nstderr: ${stderr}`))
    }, 20_000)
    child.once('error', reject)
    child.once('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, ms: Date.now() - started })
    })
  })
  return { child, done, stderr: () => stderr }
}

const cli = (args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<Run> => start(args, env).done

describe('rx-redis-streams CLI', () => {
  it('publishes, shows stats, lists and replays a dead letter, in tables and --json', async () => {
    const topic = randomName('cli')
    const group = randomName('g')
    const published = await cli(['publish', topic, 'user.signup', '{"userId":1}', '--header', 'source=web'])
    expect(published).toMatchObject({ code: 0, stderr: '' })
    const [, eventId, streamId] = /^published (\S+) to \S+ as (\d+-\d+)\n$/.exec(published.stdout) ?? []
    expect(eventId).toBeDefined()
    const second = await cli(['publish', topic, 'user.signup', '{"userId":2}', '--json'])
    expect(second.code).toBe(0)
    const secondJson = JSON.parse(second.stdout) as { topic: string; eventId: string; streamId: string }
    expect(secondJson.topic).toBe(topic)

    // A consumer that fails user 2 once: one dead letter.
    const events = testEvents({ maxRetries: 0 })
    let failUser2 = true
    const handled: number[] = []
    const sub = events.subscribe(topic, group, (msg) => {
      const { userId } = msg.event.payload as { userId: number }
      if (userId === 2 && failUser2) throw new Error('mailbox full')
      handled.push(userId)
    })
    await waitFor(async () => handled.length === 1 && (await events.deadLetters.count(topic)) === 1)
    const [letter] = await events.deadLetters.list(topic)
    expect(letter!.event?.headers).toEqual({})

    const [stats, statsJson, list, listJson, show] = await Promise.all([
      cli(['stats', topic]),
      cli(['stats', topic, '--json']),
      cli(['dlq', 'list', topic]),
      cli(['dlq', 'list', topic, '--json']),
      cli(['dlq', 'show', topic, letter!.dlqId]),
    ])
    expect(stats.code).toBe(0)
    expect(stats.stdout).toMatch(/^TOPIC\s+LENGTH\s+FIRST ID\s+LAST ID\s+DELAYED\s+DEAD LETTERS\s+GROUPS$/m)
    expect(stats.stdout).toMatch(new RegExp(`^${topic}\\s+2\\s+${streamId}\\s+${secondJson.streamId}\\s+0\\s+1\\s+1$`, 'm'))
    expect(stats.stdout).toMatch(new RegExp(`^${topic}\\s+${group}\\s+0\\s+0\\s+1\\s+${secondJson.streamId}$`, 'm'))
    const s = JSON.parse(statsJson.stdout) as { topics: Record<string, { messagesCount: number; deadLetters: number; groups: Record<string, { pending: number; lag: number }> }> }
    expect(s.topics[topic]).toMatchObject({ messagesCount: 2, deadLetters: 1, groups: { [group]: { pending: 0, lag: 0 } } })

    expect(list.code).toBe(0)
    expect(list.stdout).toMatch(new RegExp(`^${letter!.dlqId}\\s+${group}\\s+1\\s+\\S+Z\\s+user\\.signup\\s+mailbox full$`, 'm'))
    expect(list.stdout).toContain(`1 shown of 1 dead letter(s) in ${topic}`)
    const l = JSON.parse(listJson.stdout) as { total: number; deadLetters: { dlqId: string; group: string; error: string; originalId: string; event: { name: string; payload: unknown } }[] }
    expect(l.total).toBe(1)
    expect(l.deadLetters[0]).toMatchObject({ dlqId: letter!.dlqId, group, originalId: secondJson.streamId, event: { name: 'user.signup', payload: { userId: 2 } } })
    expect(l.deadLetters[0]!.error).toContain('mailbox full')
    expect(show.code).toBe(0)
    expect(show.stdout).toMatch(/^error\s+mailbox full/m)
    expect(show.stdout).toContain('"userId": 2')

    failUser2 = false
    const replay = await cli(['dlq', 'replay', topic, letter!.dlqId])
    expect(replay.code).toBe(0)
    expect(replay.stdout).toMatch(new RegExp(`^replayed ${letter!.dlqId} to ${topic} as \\d+-\\d+ \\(for group ${group}\\)\\n$`))
    await waitFor(() => handled.includes(2))
    expect(await events.deadLetters.count(topic)).toBe(0)
    const again = await cli(['dlq', 'replay', topic, letter!.dlqId])
    expect(again.code).toBe(4)
    expect(again.stderr).toBe(`error: no dead letter ${letter!.dlqId} in ${topic}\n`)
    await sub.unsubscribe()
  })

  it('tails new events live without joining a group, until --count', async () => {
    const events = testEvents()
    const topic = randomName('tail')
    await events.publish(topic, newEvent('old.event', { n: 0 }))
    for (const json of [false, true]) {
      const tail = start(['tail', topic, '--count', '1', ...(json ? ['--json'] : [])])
      await waitFor(() => tail.stderr().includes('tailing'), 10_000, 'tail to start')
      let result: Run | undefined
      void tail.done.then((r) => (result = r))
      // Published after the tail began: it must print this one, not the old one.
      while (result === undefined) {
        await events.publish(topic, newEvent('new.event', { n: 1 }, { headers: { k: 'v' }, correlationId: 'c-1' }))
        await new Promise((r) => setTimeout(r, 200))
      }
      expect(result.code).toBe(0)
      const lines = result.stdout.trim().split('\n')
      expect(lines).toHaveLength(1)
      if (json) {
        expect(JSON.parse(lines[0]!)).toMatchObject({ name: 'new.event', payload: { n: 1 }, headers: { k: 'v' }, correlationId: 'c-1', streamId: expect.any(String) as string })
      } else {
        expect(lines[0]).toMatch(/^\d+-\d+ {2}\S+Z {2}new\.event {2}\{"n":1\} {2}headers=\{"k":"v"\} {2}cid=c-1$/)
      }
    }
    // Tailing joins no group.
    expect((await events.stats(topic)).topics[topic]?.groups).toEqual({})
    const history = await cli(['tail', topic, '--from', '0', '--count', '2', '--json'])
    expect(history.stdout.trim().split('\n').map((line) => (JSON.parse(line) as { name: string }).name)).toEqual(['old.event', 'new.event'])
  })

  it('schedules with --delay and lists and cancels delayed events', async () => {
    const topic = randomName('delayed')
    const scheduled = await cli(['publish', topic, 'reminder.send', '{"userId":7}', '--delay', '1h', '--json'])
    expect(scheduled.code).toBe(0)
    const { eventId, dueAt } = JSON.parse(scheduled.stdout) as { eventId: string; dueAt: number }
    expect(dueAt).toBeGreaterThan(Date.now() + 3_500_000)
    const listed = await cli(['delayed', 'list', topic, '--json'])
    expect(JSON.parse(listed.stdout)).toMatchObject({ total: 1, delayed: [{ eventId, dueAt, event: { name: 'reminder.send', payload: { userId: 7 } } }] })
    const table = await cli(['delayed', 'list', topic])
    expect(table.stdout).toMatch(new RegExp(`^${eventId}\\s+\\S+Z\\s+(59m|1h) \\d+\\w\\s+reminder\\.send\\s+\\{"userId":7\\}$`, 'm'))
    expect((await cli(['delayed', 'cancel', topic, eventId])).code).toBe(0)
    expect((await cli(['delayed', 'cancel', topic, eventId])).code).toBe(4)
  })

  it('replays all and purges with progress on stderr; purge needs --yes', async () => {
    const events = testEvents({ maxRetries: 0 })
    const topic = randomName('purge')
    await events.publishBatch(topic, Array.from({ length: 5 }, (_, i) => newEvent('job', { i })))
    const sub = events.subscribe(topic, 'workers', () => {
      throw new Error('down')
    })
    await waitFor(async () => (await events.deadLetters.count(topic)) === 5)
    await sub.unsubscribe()
    const replayAll = await cli(['dlq', 'replay-all', topic, '--group', 'workers', '--json'])
    expect(replayAll.code).toBe(0)
    expect(JSON.parse(replayAll.stdout)).toEqual({ topic, replayed: 5 })
    expect(replayAll.stderr).toContain(`replaying the dead letters of group workers of ${topic}`)
    expect(replayAll.stderr).toContain('replayed 5')
    const sub2 = events.subscribe(topic, 'workers', () => {
      throw new Error('still down')
    })
    await waitFor(async () => (await events.deadLetters.count(topic)) === 5)
    await sub2.unsubscribe()
    const refused = await cli(['dlq', 'purge', topic])
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain(`dlq purge deletes all 5 dead letter(s) of ${topic}: add --yes to confirm`)
    const purged = await cli(['dlq', 'purge', topic, '--yes'])
    expect(purged).toMatchObject({ code: 0, stdout: `purged 5 dead letter(s) of ${topic}\n` })
    expect(purged.stderr).toContain(`purging 5 dead letter(s) of ${topic}`)
    expect(await events.deadLetters.count(topic)).toBe(0)
  })

  it('fails with a clear message and exit code, never a stack trace', async () => {
    const closedPort = await freePort()
    const [badTopic, unknownTopic, badJson, badOption, unreachable, help] = await Promise.all([
      cli(['stats', 'bad topic']),
      cli(['dlq', 'list', randomName('never')]),
      cli(['publish', 'orders', 'x', '{nope']),
      cli(['tail', 'orders', '--delay', '5s']),
      cli(['stats'], { EVENT_REDIS_URL: `redis://127.0.0.1:${String(closedPort)}` }),
      cli(['--help']),
    ])
    expect(badTopic.code).toBe(2)
    expect(badTopic.stderr).toBe('error: invalid topic "bad topic": allowed are letters, digits, ".", "_", "-" and ":"\n')
    expect(unknownTopic.code).toBe(2)
    expect(unknownTopic.stderr).toMatch(/^error: unknown topic "never-\w+": nothing was ever published to it/)
    expect(badJson.code).toBe(2)
    expect(badJson.stderr).toMatch(/^error: <json> is not valid JSON/)
    expect(badOption.code).toBe(2)
    expect(badOption.stderr).toMatch(/^error: tail does not take --delay/)
    expect(unreachable.code).toBe(3)
    expect(unreachable.stderr).toBe(`error: cannot reach Redis at redis://127.0.0.1:${String(closedPort)}/0: Redis failed: connect ECONNREFUSED 127.0.0.1:${String(closedPort)}\n`)
    expect(unreachable.ms).toBeLessThan(5_000)
    for (const run of [badTopic, unknownTopic, badJson, badOption, unreachable]) {
      expect(run.stdout).toBe('')
      expect(run.stderr).not.toMatch(/^\s+at /m)
    }
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('Usage: rx-redis-streams <command>')
  })
})
