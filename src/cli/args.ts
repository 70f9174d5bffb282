/**
 * Command-line parsing (node:util `parseArgs`): the commands, their arguments
 * and options, and the usage text.
 */
import { parseArgs } from 'node:util'
import { parseDuration } from '../config/duration.js'

/** A mistake in the command line or its values: exit code 2, with the usage hint. */
export class UsageError extends Error {
  override readonly name = 'UsageError'
}

const OPTIONS = {
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
  debug: { type: 'boolean' },
  timeout: { type: 'string' },
  count: { type: 'string', short: 'n' },
  from: { type: 'string' },
  after: { type: 'string' },
  offset: { type: 'string' },
  group: { type: 'string', short: 'g' },
  header: { type: 'string', short: 'H', multiple: true },
  delay: { type: 'string' },
  at: { type: 'string' },
  'correlation-id': { type: 'string' },
  yes: { type: 'boolean', short: 'y' },
  watch: { type: 'boolean', short: 'w' },
  interval: { type: 'string' },
} as const

type OptionName = keyof typeof OPTIONS

/** Options every command accepts. */
const GLOBAL: readonly OptionName[] = ['json', 'help', 'version', 'debug', 'timeout']

/** One command: its words, positional arguments and own options. */
export interface CommandSpec {
  readonly name: string
  /** Positional argument names; a trailing `...` takes one or more. */
  readonly args: readonly string[]
  /** How many of `args` are optional at the end. */
  readonly optional?: number
  readonly options: readonly OptionName[]
  readonly summary: string
}

/** Every command, by its words. */
export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'stats',
    args: ['topic'],
    optional: 1,
    options: ['watch', 'interval', 'count'],
    summary: 'topics, groups and consumers: length, ids, delayed, dead letters, pending, lag, idle; --watch refreshes in place every --interval (2s)',
  },
  { name: 'topics', args: [], options: [], summary: 'the registered topics' },
  { name: 'health', args: [], options: [], summary: 'PING round trip; exit 0 when Redis answers' },
  { name: 'tail', args: ['topic'], options: ['count', 'from'], summary: 'follow new events live, without joining a group (--from 0 for the history, --from <id> after an id)' },
  {
    name: 'publish',
    args: ['topic', 'name', 'json'],
    options: ['header', 'delay', 'at', 'correlation-id'],
    summary: 'publish one event: --header k=v (repeatable), --correlation-id, --delay 5s or --at <ISO time> (delivered when a consumer or "delayed promote" runs)',
  },
  { name: 'dlq list', args: ['topic'], options: ['count', 'after', 'group'], summary: 'dead letters, oldest first (--count 20, --after <id> for the next page, --group)' },
  { name: 'dlq show', args: ['topic', 'id'], options: [], summary: 'one dead letter with its payload and fields' },
  { name: 'dlq replay', args: ['topic', 'id'], options: [], summary: 'send a dead letter back to its topic, for the group that failed it' },
  { name: 'dlq replay-all', args: ['topic'], options: ['group'], summary: 'replay every dead letter (of one --group), with progress' },
  { name: 'dlq remove', args: ['topic', 'id...'], options: [], summary: 'delete dead letters by id' },
  { name: 'dlq purge', args: ['topic'], options: ['yes'], summary: 'delete every dead letter of a topic (needs --yes / -y), with progress' },
  { name: 'delayed list', args: ['topic'], options: ['count', 'offset'], summary: 'delayed events, earliest first (--count 20, --offset)' },
  { name: 'delayed cancel', args: ['topic', 'eventId'], options: [], summary: 'cancel a delayed event before it is due (by its event id)' },
  {
    name: 'delayed promote',
    args: ['topic'],
    optional: 1,
    options: ['watch', 'interval'],
    summary: 'move due delayed events to their topic now (every topic without one); --watch keeps promoting until Ctrl-C',
  },
]

/** The usage text. */
export function usage(): string {
  const lines = COMMANDS.map((c) => {
    const args = c.args.map((a, i) => (i >= c.args.length - (c.optional ?? 0) ? `[${a}]` : `<${a}>`)).join(' ')
    return [`  ${`${c.name} ${args}`.padEnd(34)} ${c.summary}`]
  }).flat()
  return [
    'Usage: rx-redis-streams <command> [arguments] [options]',
    '',
    'Commands:',
    ...lines,
    '',
    'Options:',
    '  --json              machine-readable output (one JSON document; one line per event for tail and per refresh',
    '                      for --watch); on failure {"ok": false, "exitCode", "error", "message"}',
    '  --timeout <dur>     how long to wait for Redis to answer, default 2s',
    '  --debug             print stack traces of unexpected errors',
    '  -h, --help          this text;  -v, --version  the version',
    '',
    'Redis is configured by the EVENT_* variables (EVENT_REDIS_URL, EVENT_REDIS_HOSTS, EVENT_KEY_PREFIX, ...).',
    'Exit codes: 0 ok, 1 failure, 2 usage or invalid input, 3 Redis unreachable, 4 not found.',
  ].join('\n')
}

/** A parsed command line. */
export interface ParsedArgs {
  /** The command's words (`dlq replay`), or `help` / `version`. */
  readonly command: string
  readonly args: readonly string[]
  readonly json: boolean
  readonly debug: boolean
  readonly timeoutMs: number
  readonly count: number | undefined
  readonly from: string | undefined
  readonly after: string | undefined
  readonly offset: number | undefined
  readonly group: string | undefined
  readonly headers: Readonly<Record<string, string>>
  readonly delayMs: number | undefined
  readonly at: number | undefined
  readonly correlationId: string | undefined
  readonly yes: boolean
  readonly watch: boolean
  readonly intervalMs: number | undefined
}

function positiveInteger(name: string, text: string | undefined, allowZero = false): number | undefined {
  if (text === undefined) return undefined
  const n = Number(text)
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || (!allowZero && n < 1)) {
    throw new UsageError(`--${name} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got ${JSON.stringify(text)}`)
  }
  return n
}

function duration(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  const ms = /^\d+$/.test(text) ? Number(text) : parseDuration(text)
  if (ms === undefined) throw new UsageError(`--${name} must be a duration such as 250ms, 5s, 10m or 1h30m, got ${JSON.stringify(text)}`)
  return ms
}

function positiveDuration(name: string, text: string | undefined): number | undefined {
  const ms = duration(name, text)
  if (ms !== undefined && ms <= 0) throw new UsageError(`--${name} must be longer than 0, got ${JSON.stringify(text)}`)
  return ms
}

/** A stream entry id as Redis writes them: `<ms>-<seq>`, or `<ms>` alone. */
const STREAM_ID = /^\d{1,20}(-\d{1,20})?$/

/**
 * Checks that `text` is a stream entry id (`1718000000000-0`), so that a typo
 * is reported as bad input instead of reaching Redis.
 *
 * ## Example
 * ```ts
 * requireStreamId('<id>', '1718000000000-0') // '1718000000000-0'
 * requireStreamId('<id>', 'garbage')         // throws UsageError
 * ```
 * @throws {UsageError} when it is not one
 */
export function requireStreamId(what: string, text: string): string {
  if (!STREAM_ID.test(text)) throw new UsageError(`${what} must be a stream entry id such as 1718000000000-0, got ${JSON.stringify(text)}`)
  return text
}

function headers(list: readonly string[] | undefined): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>
  for (const item of list ?? []) {
    const eq = item.indexOf('=')
    if (eq <= 0) throw new UsageError(`--header takes key=value, got ${JSON.stringify(item)}`)
    out[item.slice(0, eq)] = item.slice(eq + 1)
  }
  return out
}

/**
 * Parses the command line (without `node` and the script).
 *
 * @example
 * ```ts
 * parseCommandLine(['dlq', 'replay', 'orders', '1718-0', '--json']).command // 'dlq replay'
 * ```
 * @throws {UsageError} for an unknown command or option, a missing argument or a bad value
 */
export function parseCommandLine(argv: readonly string[]): ParsedArgs {
  let parsed
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true })
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message.replace(/\. To specify a positional argument.*$/s, '') : String(error))
  }
  const { values, positionals } = parsed
  const base = {
    json: values.json === true,
    debug: values.debug === true,
    timeoutMs: duration('timeout', values.timeout) ?? 2_000,
    count: undefined,
    from: undefined,
    after: undefined,
    offset: undefined,
    group: undefined,
    headers: {},
    delayMs: undefined,
    at: undefined,
    correlationId: undefined,
    yes: false,
    watch: false,
    intervalMs: undefined,
  }
  if (values.version === true) return { ...base, command: 'version', args: [] }
  if (values.help === true || positionals.length === 0 || positionals[0] === 'help') return { ...base, command: 'help', args: [] }

  const [first = '', second = ''] = positionals
  const spec = COMMANDS.find((c) => c.name === first) ?? COMMANDS.find((c) => c.name === `${first} ${second}`)
  if (spec === undefined) {
    const family = COMMANDS.filter((c) => c.name.startsWith(`${first} `)).map((c) => c.name.split(' ')[1])
    if (family.length > 0) throw new UsageError(`${first} needs one of: ${family.join(', ')}${second === '' ? '' : ` (got ${JSON.stringify(second)})`}`)
    throw new UsageError(`unknown command ${JSON.stringify(first)}`)
  }
  const args = positionals.slice(spec.name.split(' ').length)
  const variadic = spec.args[spec.args.length - 1]?.endsWith('...') === true
  const min = spec.args.length - (spec.optional ?? 0)
  if (args.length < min) throw new UsageError(`${spec.name} needs <${spec.args.slice(args.length, min).join('> <').replace('...', '')}>`)
  if (!variadic && args.length > spec.args.length) throw new UsageError(`${spec.name} takes ${spec.args.length} argument(s), got ${args.length}: ${args.join(' ')}`)

  const allowed = new Set<string>([...GLOBAL, ...spec.options])
  for (const name of Object.keys(values)) {
    if (!allowed.has(name)) throw new UsageError(`${spec.name} does not take --${name}`)
  }
  if (values.interval !== undefined && values.watch !== true) throw new UsageError('--interval goes with --watch')
  if (spec.name === 'stats' && values.count !== undefined && values.watch !== true) throw new UsageError('stats takes --count only with --watch (the number of refreshes)')
  if (values.from !== undefined && values.from !== '$') requireStreamId('--from', values.from)
  if (values.after !== undefined) requireStreamId('--after', values.after)
  if (values.delay !== undefined && values.at !== undefined) throw new UsageError('give --delay or --at, not both')
  let at: number | undefined
  if (values.at !== undefined) {
    at = Date.parse(values.at)
    if (!Number.isFinite(at)) throw new UsageError(`--at must be a date such as 2030-01-01T08:00:00Z, got ${JSON.stringify(values.at)}`)
  }
  return {
    ...base,
    command: spec.name,
    args,
    count: positiveInteger('count', values.count),
    from: values.from,
    after: values.after,
    offset: positiveInteger('offset', values.offset, true),
    group: values.group,
    headers: headers(values.header),
    delayMs: duration('delay', values.delay),
    at,
    correlationId: values['correlation-id'],
    yes: values.yes === true,
    watch: values.watch === true,
    intervalMs: positiveDuration('interval', values.interval),
  }
}
