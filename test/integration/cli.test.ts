import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { newEvent } from '../../src/index.js'
import { runCli } from '../../src/cli/run.js'
import { CLEAR_SCREEN } from '../../src/cli/output.js'
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
    }, 60_000) // generous: only a CLI that never exits fails here, however loaded the machine
    child.once('error', reject)
    child.once('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, ms: Date.now() - started })
    })
  })
  return { child, done, stderr: () => stderr }
}

const cli = (args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<Run> => start(args, env).done

/** Runs the CLI in this process (the same `runCli` that main.ts calls): no process start, so many runs are cheap. */
async function inProcess(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<Omit<Run, 'ms'>> {
  const out: string[] = []
  const err: string[] = []
  const code = await runCli(args, { out: (t) => out.push(`${t}\n`), err: (t) => err.push(`${t}\n`), env: { ...process.env, EVENT_REDIS_URL: redisUrl(), ...env } })
  return { code, stdout: out.join(''), stderr: err.join('') }
}

// Each test starts CLI processes (tsx compiles the CLI on every start): generous timeouts for a loaded machine.
describe('rx-redis-streams CLI', { timeout: 180_000 }, () => {
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
    await waitFor(async () => handled.length === 1 && (await events.deadLetters.count(topic)) === 1, 60_000)
    const [letter] = await events.deadLetters.list(topic)
    expect(letter!.event?.headers).toEqual({})

    const [stats, statsJson, list, listJson, show] = await Promise.all([
      inProcess(['stats', topic]),
      inProcess(['stats', topic, '--json']),
      inProcess(['dlq', 'list', topic]),
      inProcess(['dlq', 'list', topic, '--json']),
      inProcess(['dlq', 'show', topic, letter!.dlqId]),
    ])
    expect(stats.code).toBe(0)
    expect(stats.stdout).toMatch(/^TOPIC\s+LENGTH\s+FIRST ID\s+LAST ID\s+DELAYED\s+DEAD LETTERS\s+GROUPS$/m)
    expect(stats.stdout).toMatch(new RegExp(`^${topic}\\s+2\\s+${streamId}\\s+${secondJson.streamId}\\s+0\\s+1\\s+1$`, 'm'))
    expect(stats.stdout).toMatch(new RegExp(`^${topic}\\s+${group}\\s+0\\s+0\\s+1\\s+${secondJson.streamId}$`, 'm'))
    const s = JSON.parse(statsJson.stdout) as { topics: Record<string, { length: number; deadLetters: number; groups: Record<string, { pending: number; lag: number }> }> }
    expect(s.topics[topic]).toMatchObject({ length: 2, deadLetters: 1, groups: { [group]: { pending: 0, lag: 0 } } })

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
    await waitFor(() => handled.includes(2), 60_000)
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
      await waitFor(() => tail.stderr().includes('tailing'), 60_000, 'tail to start') // generous: a loaded machine starts processes slowly
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
    const listed = await inProcess(['delayed', 'list', topic, '--json'])
    expect(JSON.parse(listed.stdout)).toMatchObject({ total: 1, delayed: [{ eventId, dueAt, event: { name: 'reminder.send', payload: { userId: 7 } } }] })
    const table = await inProcess(['delayed', 'list', topic])
    expect(table.stdout).toMatch(new RegExp(`^${eventId}\\s+\\S+Z\\s+(59m|1h) \\d+\\w\\s+reminder\\.send\\s+\\{"userId":7\\}$`, 'm'))
    expect((await inProcess(['delayed', 'cancel', topic, eventId])).code).toBe(0)
    expect((await inProcess(['delayed', 'cancel', topic, eventId])).code).toBe(4)
  })

  it('replays all and purges with progress on stderr; purge needs --yes', async () => {
    const events = testEvents({ maxRetries: 0 })
    const topic = randomName('purge')
    await events.publishBatch(topic, Array.from({ length: 5 }, (_, i) => newEvent('job', { i })))
    const sub = events.subscribe(topic, 'workers', () => {
      throw new Error('down')
    })
    await waitFor(async () => (await events.deadLetters.count(topic)) === 5, 60_000)
    await sub.unsubscribe()
    const replayAll = await cli(['dlq', 'replay-all', topic, '--group', 'workers', '--json'])
    expect(replayAll.code).toBe(0)
    expect(JSON.parse(replayAll.stdout)).toEqual({ topic, replayed: 5 })
    expect(replayAll.stderr).toContain(`replaying the dead letters of group workers of ${topic}`)
    expect(replayAll.stderr).toContain('replayed 5')
    const sub2 = events.subscribe(topic, 'workers', () => {
      throw new Error('still down')
    })
    await waitFor(async () => (await events.deadLetters.count(topic)) === 5, 60_000)
    await sub2.unsubscribe()
    const refused = await cli(['dlq', 'purge', topic])
    expect(refused.code).toBe(2)
    expect(refused.stderr).toContain(`dlq purge deletes all 5 dead letter(s) of ${topic}: add --yes to confirm`)
    const purged = await cli(['dlq', 'purge', topic, '--yes'])
    expect(purged).toMatchObject({ code: 0, stdout: `purged 5 dead letter(s) of ${topic}\n` })
    expect(purged.stderr).toContain(`purging 5 dead letter(s) of ${topic}`)
    expect(await events.deadLetters.count(topic)).toBe(0)
  })

  it('exits as the README says: 4 for an unknown topic, 2 for an id that is not one (before Redis sees it), JSON on failure with --json', async () => {
    const events = testEvents()
    const topic = randomName('codes')
    await events.publish(topic, newEvent('x', 1))
    const [noTopic, noTopicJson, garbage, garbageJson, replayGarbage, removeGarbage, noLetter] = await Promise.all([
      inProcess(['stats', randomName('no-such-topic')]),
      inProcess(['stats', 'no-such-topic-at-all', '--json']),
      inProcess(['dlq', 'show', topic, 'garbage']),
      inProcess(['dlq', 'show', topic, 'garbage', '--json']),
      inProcess(['dlq', 'replay', topic, 'garbage']),
      inProcess(['dlq', 'remove', topic, '1-0', 'garbage']),
      inProcess(['dlq', 'show', topic, '1-0', '--json']),
    ])
    expect(noTopic).toMatchObject({ code: 4, stdout: '' })
    expect(noTopic.stderr).toMatch(/^error: unknown topic "no-such-topic-\w+": nothing was ever published to it/)
    expect(noTopicJson.code).toBe(4)
    expect(JSON.parse(noTopicJson.stdout)).toEqual({ ok: false, exitCode: 4, error: 'not_found', message: expect.stringContaining('unknown topic "no-such-topic-at-all"') as string })
    for (const run of [garbage, replayGarbage, removeGarbage]) {
      expect(run.code).toBe(2)
      expect(run.stderr).toContain('error: <id> must be a stream entry id such as 1718000000000-0, got "garbage"')
      expect(run.stderr).not.toContain('Invalid stream ID')
    }
    expect(garbageJson.code).toBe(2)
    expect(JSON.parse(garbageJson.stdout)).toMatchObject({ ok: false, exitCode: 2, error: 'bad_input' })
    expect(noLetter.code).toBe(4)
    expect(JSON.parse(noLetter.stdout)).toEqual({ ok: false, exitCode: 4, error: 'not_found', message: `no dead letter 1-0 in ${topic}` })
  })

  it('warns that a delayed event needs a promoter, and promotes due events with "delayed promote"', async () => {
    const events = testEvents()
    const topic = randomName('promote')
    const scheduled = await inProcess(['publish', topic, 'reminder.send', '{"userId":7}', '--delay', '1ms', '--json'])
    expect(scheduled.code).toBe(0)
    expect(JSON.parse(scheduled.stdout)).toMatchObject({ topic })
    expect(scheduled.stderr).toContain(`note: a delayed event reaches ${topic} only when a promoter runs at its due time`)
    expect(scheduled.stderr).toContain(`rx-redis-streams delayed promote ${topic} --watch`)
    const later = await inProcess(['publish', topic, 'reminder.later', '{}', '--at', '2999-01-01T00:00:00Z'])
    expect(later.code).toBe(0)
    expect(later.stderr).toContain('note: a delayed event')
    // Nobody consumes the topic: nothing promoted it.
    expect((await events.stats(topic)).topics[topic]).toMatchObject({ length: 0, delayed: 2 })

    const promoted = await inProcess(['delayed', 'promote', topic])
    expect(promoted.code).toBe(0)
    expect(promoted.stdout).toBe(`promoted 1 due event(s) to ${topic}; 1 waiting, next due 2999-01-01T00:00:00.000Z\n`)
    expect((await events.stats(topic)).topics[topic]).toMatchObject({ length: 1, delayed: 1 })
    const again = await inProcess(['delayed', 'promote', topic, '--json'])
    expect(JSON.parse(again.stdout)).toEqual({ promoted: 0, topics: { [topic]: { promoted: 0, waiting: 1, nextDueAt: Date.UTC(2999, 0, 1) } } })
    expect((await inProcess(['delayed', 'promote', randomName('none')])).code).toBe(4)
  })

  it('"delayed promote --watch" delivers delayed events while it runs, and stops on Ctrl-C', async () => {
    const events = testEvents()
    const topic = randomName('promote-watch')
    const promoter = start(['delayed', 'promote', topic, '--watch', '--interval', '50ms'])
    await events.publish(topic, newEvent('registered', {})) // the topic exists before the promoter looks it up
    await waitFor(() => promoter.stderr().includes('promoting due delayed events'), 60_000, 'the promoter to start')
    await events.publishWithDelay(topic, newEvent('reminder.send', { n: 1 }), 100)
    // The manager that scheduled it would promote it too: stop its promoter by closing it first.
    await events.close()
    const reader = testEvents({ delayedQueueEnabled: false })
    await waitFor(async () => (await reader.stats(topic)).topics[topic]?.length === 2, 60_000, 'the CLI to promote the event')
    promoter.child.kill('SIGINT')
    const result = await promoter.done
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(new RegExp(`promoted 1 due event\\(s\\) to ${topic}; 0 waiting$`, 'm'))
  })

  it('"stats --watch" redraws in place on a terminal, and prints frames one after another when piped', async () => {
    const events = testEvents()
    const topic = randomName('watch')
    await events.publish(topic, newEvent('x', 1))
    const env = { ...process.env, EVENT_REDIS_URL: redisUrl() }
    const terminal = { out: [] as string[], control: [] as number[], writes: [] as string[] }
    const code = await runCli(['stats', topic, '--watch', '--interval', '10ms', '--count', '3'], {
      out: (text) => {
        terminal.out.push(text)
        terminal.writes.push(text)
      },
      err: () => undefined,
      env,
      isTTY: true,
      control: (sequence) => {
        terminal.control.push(terminal.writes.length)
        terminal.writes.push(sequence)
      },
    })
    expect(code).toBe(0)
    // Each of the 3 frames starts with cursor-home + clear, before anything of that frame is written.
    expect(terminal.writes.filter((w) => w === CLEAR_SCREEN)).toHaveLength(3)
    expect(terminal.writes[0]).toBe(CLEAR_SCREEN)
    expect(terminal.out.filter((line) => line.includes('(Ctrl-C to stop)'))).toHaveLength(3)
    expect(terminal.out.filter((line) => new RegExp(`^${topic}\\s+1\\s`, 'm').test(line))).toHaveLength(3)

    const piped: string[] = []
    const controls: string[] = []
    expect(await runCli(['stats', topic, '--watch', '--interval', '10ms', '--count', '2'], { out: (t) => piped.push(t), err: () => undefined, env, isTTY: false, control: (c) => controls.push(c) })).toBe(0)
    expect(controls).toEqual([])
    expect(piped.filter((line) => /^(\n)?\d{4}-\d\d-\d\dT\S+Z {2}every 10ms\n$/.test(line))).toHaveLength(2)
    const json: string[] = []
    expect(await runCli(['stats', topic, '--watch', '--interval', '10ms', '--count', '2', '--json'], { out: (t) => json.push(t), err: () => undefined, env, isTTY: true, control: (c) => controls.push(c) })).toBe(0)
    expect(controls).toEqual([])
    expect(json.map((line) => Object.keys((JSON.parse(line) as { topics: object }).topics))).toEqual([[topic], [topic]])
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
    expect(unknownTopic.code).toBe(4)
    expect(unknownTopic.stderr).toMatch(/^error: unknown topic "never-\w+": nothing was ever published to it/)
    expect(badJson.code).toBe(2)
    expect(badJson.stderr).toMatch(/^error: <json> is not valid JSON/)
    expect(badOption.code).toBe(2)
    expect(badOption.stderr).toMatch(/^error: tail does not take --delay/)
    expect(unreachable.code).toBe(3)
    expect(unreachable.stderr).toBe(`error: cannot reach Redis at redis://127.0.0.1:${String(closedPort)}/0: Redis failed: connect ECONNREFUSED 127.0.0.1:${String(closedPort)}\n`)
    for (const run of [badTopic, unknownTopic, badJson, badOption, unreachable]) {
      expect(run.stdout).toBe('')
      expect(run.stderr).not.toMatch(/^\s+at /m)
    }
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('Usage: rx-redis-streams <command>')
  })
})
