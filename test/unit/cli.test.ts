import { describe, expect, it } from 'vitest'
import { parseCommandLine, requireStreamId, usage, UsageError } from '../../src/cli/args.js'
import { humanDuration, table, truncate } from '../../src/cli/output.js'
import { runCli } from '../../src/cli/run.js'

function io(env: NodeJS.ProcessEnv = {}): { out: string[]; err: string[]; io: { out: (t: string) => void; err: (t: string) => void; env: NodeJS.ProcessEnv } } {
  const out: string[] = []
  const err: string[] = []
  return { out, err, io: { out: (t) => out.push(t), err: (t) => err.push(t), env } }
}

describe('parseCommandLine', () => {
  it('reads commands, arguments and options', () => {
    expect(parseCommandLine(['dlq', 'replay', 'orders', '1-0', '--json'])).toMatchObject({ command: 'dlq replay', args: ['orders', '1-0'], json: true, timeoutMs: 2_000 })
    expect(parseCommandLine(['stats'])).toMatchObject({ command: 'stats', args: [] })
    expect(parseCommandLine(['publish', 't', 'n', '{}', '-H', 'a=1', '--header', 'b=x=y', '--delay', '5s', '--timeout', '500ms'])).toMatchObject({
      command: 'publish',
      headers: { a: '1', b: 'x=y' },
      delayMs: 5_000,
      timeoutMs: 500,
    })
    expect(parseCommandLine(['tail', 't', '-n', '3', '--from', '0'])).toMatchObject({ count: 3, from: '0' })
    expect(parseCommandLine(['dlq', 'remove', 't', 'a', 'b', 'c']).args).toEqual(['t', 'a', 'b', 'c'])
    expect(parseCommandLine(['publish', 't', 'n', '{}', '--at', '2030-01-01T00:00:00Z']).at).toBe(Date.UTC(2030, 0, 1))
    expect(parseCommandLine([]).command).toBe('help')
    expect(parseCommandLine(['stats', '--help']).command).toBe('help')
    expect(parseCommandLine(['-v']).command).toBe('version')
  })

  it('refuses what it cannot run, with a message', () => {
    const cases: [string[], RegExp][] = [
      [['frob'], /unknown command "frob"/],
      [['dlq'], /dlq needs one of: list, show, replay, replay-all, remove, purge/],
      [['dlq', 'frob', 't'], /dlq needs one of: .* \(got "frob"\)/],
      [['tail'], /tail needs <topic>/],
      [['dlq', 'show', 't'], /dlq show needs <id>/],
      [['stats', 'a', 'b'], /stats takes 1 argument\(s\), got 2/],
      [['topics', '--count', '3'], /topics does not take --count/],
      [['tail', 't', '--count', '0'], /--count must be a positive integer/],
      [['tail', 't', '--count', 'x'], /--count must be a positive integer/],
      [['publish', 't', 'n', '{}', '--delay', 'soon'], /--delay must be a duration/],
      [['publish', 't', 'n', '{}', '--header', 'novalue'], /--header takes key=value/],
      [['publish', 't', 'n', '{}', '--delay', '1s', '--at', '2030-01-01'], /--delay or --at, not both/],
      [['stats', '--bogus'], /Unknown option '--bogus'/],
      [['stats', '--interval', '1s'], /--interval goes with --watch/],
      [['stats', '--watch', '--interval', '0s'], /--interval must be longer than 0/],
      [['stats', '--count', '2'], /stats takes --count only with --watch/],
      [['tail', 't', '--from', 'yesterday'], /--from must be a stream entry id such as 1718000000000-0, got "yesterday"/],
      [['dlq', 'list', 't', '--after', 'x-1'], /--after must be a stream entry id/],
      [['delayed', 'promote', 't', '--yes'], /delayed promote does not take --yes/],
    ]
    for (const [argv, message] of cases) {
      expect(() => parseCommandLine(argv), argv.join(' ')).toThrow(UsageError)
      expect(() => parseCommandLine(argv), argv.join(' ')).toThrow(message)
    }
  })

  it('documents every command in the usage text', () => {
    for (const command of ['stats', 'topics', 'health', 'tail', 'publish', 'dlq list', 'dlq show', 'dlq replay', 'dlq replay-all', 'dlq remove', 'dlq purge', 'delayed list', 'delayed cancel', 'delayed promote']) {
      expect(usage()).toContain(`  ${command} `)
    }
    for (const option of ['--yes', '--at', '--from', '--after', '--watch', '--interval', '--delay', '--json']) expect(usage()).toContain(option)
  })

  it('reads --watch, --interval and the promote command', () => {
    expect(parseCommandLine(['stats', '--watch'])).toMatchObject({ command: 'stats', watch: true, intervalMs: undefined })
    expect(parseCommandLine(['stats', 'orders', '-w', '--interval', '500ms', '--count', '3'])).toMatchObject({ args: ['orders'], watch: true, intervalMs: 500, count: 3 })
    expect(parseCommandLine(['delayed', 'promote'])).toMatchObject({ command: 'delayed promote', args: [], watch: false })
    expect(parseCommandLine(['delayed', 'promote', 'orders', '--watch'])).toMatchObject({ args: ['orders'], watch: true })
    expect(parseCommandLine(['tail', 't', '--from', '$']).from).toBe('$')
    expect(parseCommandLine(['tail', 't', '--from', '1718000000000-3']).from).toBe('1718000000000-3')
  })

  it('accepts stream entry ids as Redis writes them, nothing else', () => {
    for (const id of ['0', '0-0', '1718000000000-0', '1718000000000-12']) expect(requireStreamId('<id>', id)).toBe(id)
    for (const id of ['', 'garbage', '-', '+', '1-', '-1', '1-2-3', '1.5-0', ' 1-0']) {
      expect(() => requireStreamId('<id>', id), JSON.stringify(id)).toThrow(UsageError)
    }
  })
})

describe('runCli without Redis', () => {
  it('exits 2 on usage errors and an invalid environment, 0 for help, without connecting', async () => {
    const bad = io()
    expect(await runCli(['frob'], bad.io)).toBe(2)
    expect(bad.err).toEqual(['error: unknown command "frob"', 'run "rx-redis-streams --help" for usage'])
    const config = io({ EVENT_REDIS_URL: 'ftp://nope', EVENT_REDIS_PASSWORD: 'hunter2' })
    expect(await runCli(['stats'], config.io)).toBe(2)
    expect(config.err.join('\n')).toMatch(/^error: invalid configuration: EVENT_REDIS_URL=ftp:\/\/nope/)
    expect(config.err.join('\n')).not.toContain('hunter2')
    const memory = io({ EVENT_REDIS_URL: 'memory://' })
    expect(await runCli(['stats'], memory.io)).toBe(2)
    expect(memory.err[0]).toContain('the CLI needs a Redis')
    const help = io()
    expect(await runCli(['--help'], help.io)).toBe(0)
    expect(help.out[0]).toContain('Usage: rx-redis-streams')
  })

  it('prints JSON on stdout when --json was asked for and it fails, the message on stderr', async () => {
    const bad = io()
    expect(await runCli(['dlq', 'show', 'orders', '--json'], bad.io)).toBe(2)
    expect(bad.out.map((line) => JSON.parse(line) as unknown)).toEqual([{ ok: false, exitCode: 2, error: 'bad_input', message: 'dlq show needs <id>' }])
    expect(bad.err[0]).toBe('error: dlq show needs <id>')
    const garbage = io()
    expect(await runCli(['dlq', 'show', 'orders', 'garbage', '--json'], garbage.io)).toBe(2)
    expect(JSON.parse(garbage.out.join('\n'))).toMatchObject({ ok: false, exitCode: 2, error: 'bad_input', message: expect.stringContaining('garbage') as string })
    const config = io({ EVENT_REDIS_URL: 'ftp://nope', EVENT_REDIS_PASSWORD: 'hunter2' })
    expect(await runCli(['stats', '--json'], config.io)).toBe(2)
    expect(JSON.parse(config.out.join('\n'))).toMatchObject({ ok: false, exitCode: 2, error: 'bad_input' })
    expect(config.out.join('\n')).not.toContain('hunter2')
    const plain = io()
    expect(await runCli(['dlq', 'show', 'orders'], plain.io)).toBe(2)
    expect(plain.out).toEqual([])
  })
})

describe('output helpers', () => {
  it('align tables, shorten durations and text', () => {
    expect(table(['A', 'LONGER'], [['xyz', '1'], ['q', '22']])).toBe('A    LONGER\nxyz  1\nq    22')
    expect(humanDuration(850)).toBe('850ms')
    expect(humanDuration(12_340)).toBe('12.3s')
    expect(humanDuration(65_000)).toBe('1m 05s')
    expect(humanDuration(3 * 3_600_000 + 20 * 60_000)).toBe('3h 20m')
    expect(humanDuration(2 * 86_400_000 + 4 * 3_600_000)).toBe('2d 4h')
    expect(humanDuration(-1_500)).toBe('-1.5s')
    expect(truncate('a\n  b', 10)).toBe('a b')
    expect(truncate('abcdefghijk', 5)).toBe('abcd…')
  })
})

describe('printable', () => {
  it('escapes terminal control characters from untrusted stream data, keeps newlines and tabs, and keeps JSON valid', async () => {
    const { printable } = await import('../../src/cli/output.js')
    expect(printable('a\u001b]0;owned\u0007b\u009bc\nd\te')).toBe('a\\u001b]0;owned\\u0007b\\u009bc\nd\te')
    expect((JSON.parse(printable(JSON.stringify({ x: 'q\u0085r' }))) as { x: string }).x).toBe('q\u0085r')
  })
})
