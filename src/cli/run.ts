/**
 * The CLI as a function: parses, connects, runs one command, reports errors
 * as one line with an exit code (no stack trace for user errors).
 */
import { ConfigError, EventSystemError, InvalidNameError, InvalidTopicError, PayloadTooLargeError, SerializationError } from '../errors.js'
import { INSTRUMENTATION_VERSION } from '../telemetry/instruments.js'
import { parseCommandLine, usage, UsageError, type ParsedArgs } from './args.js'
import { COMMAND_HANDLERS, connect, MissingError, UnreachableError, type Connection } from './commands.js'
import { printableIo, type CliIo } from './output.js'

/** Exit codes. */
export const EXIT = { ok: 0, failure: 1, usage: 2, unreachable: 3, notFound: 4 } as const

/** The `error` of a `--json` failure, by exit code. */
const ERROR_KIND: Readonly<Record<number, string>> = { 1: 'failure', 2: 'bad_input', 3: 'unreachable', 4: 'not_found' }

/**
 * Reports a failure on stderr and, with `--json`, as one JSON document on stdout too
 * (`{"ok": false, "exitCode": 4, "error": "not_found", "message": "…"}`), so a script
 * that parses stdout always gets JSON.
 */
function report(error: unknown, io: CliIo, debug: boolean, asJson: boolean): number {
  const lines: string[] = []
  const code = describe(error, { err: (text) => lines.push(text) }, debug)
  for (const line of lines) io.err(line)
  if (asJson) io.out(JSON.stringify({ ok: false, exitCode: code, error: ERROR_KIND[code] ?? 'failure', message: lines[0]?.replace(/^error: /, '') ?? '' }))
  return code
}

function describe(error: unknown, io: Pick<CliIo, 'err'>, debug: boolean): number {
  if (error instanceof UsageError) {
    io.err(`error: ${error.message}`)
    io.err('run "rx-redis-streams --help" for usage')
    return EXIT.usage
  }
  if (error instanceof InvalidTopicError || error instanceof InvalidNameError || error instanceof SerializationError || error instanceof PayloadTooLargeError) {
    io.err(`error: ${error.message}`)
    return EXIT.usage
  }
  if (error instanceof ConfigError) {
    io.err(`error: ${error.message}`)
    return EXIT.usage
  }
  if (error instanceof UnreachableError) {
    io.err(`error: ${error.message}`)
    return EXIT.unreachable
  }
  if (error instanceof MissingError) {
    io.err(`error: ${error.message}`)
    return EXIT.notFound
  }
  const message = error instanceof Error ? error.message : String(error)
  io.err(`error: ${message}`)
  if (debug && error instanceof Error && error.stack !== undefined) io.err(error.stack)
  else if (!(error instanceof EventSystemError)) io.err('(unexpected: run with --debug for the stack trace)')
  return EXIT.failure
}

/**
 * Runs the `rx-redis-streams` command line; resolves to the exit code.
 *
 * @example
 * ```ts
 * import { runCli } from './run.js'
 * const code = await runCli(['stats', '--json'], { out: console.log, err: console.error, env: process.env })
 * ```
 */
export async function runCli(argv: readonly string[], rawIo: CliIo): Promise<number> {
  const io = printableIo(rawIo)
  let parsed: ParsedArgs
  try {
    parsed = parseCommandLine(argv)
  } catch (error) {
    // The line did not parse, but a script that asked for JSON still gets it.
    return report(error, io, false, argv.includes('--json'))
  }
  if (parsed.command === 'help') {
    io.out(usage())
    return EXIT.ok
  }
  if (parsed.command === 'version') {
    io.out(INSTRUMENTATION_VERSION)
    return EXIT.ok
  }
  const handler = COMMAND_HANDLERS[parsed.command]
  if (handler === undefined) return report(new UsageError(`unknown command ${parsed.command}`), io, false, parsed.json)
  let conn: Connection | undefined
  try {
    conn = await connect(io, parsed.timeoutMs)
    return await handler(conn, parsed, io)
  } catch (error) {
    return report(error, io, parsed.debug, parsed.json)
  } finally {
    await conn?.close()
  }
}
