#!/usr/bin/env node
/**
 * `rx-redis-streams`: stats, tail, publish, dead letters and delayed events
 * from the command line, configured by the `EVENT_*` variables.
 *
 *   npx rx-redis-streams stats
 *   npm run cli -- dlq list user-events     (from a checkout)
 */
import { runCli } from './run.js'

process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  // `rx-redis-streams tail orders | head -1`: the reader left, which is fine.
  if (error.code === 'EPIPE') process.exit(0)
  throw error
})

const code = await runCli(process.argv.slice(2), {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(`${text}\n`),
  env: process.env,
  isTTY: process.stdout.isTTY,
  control: (sequence) => process.stdout.write(sequence),
})
process.exitCode = code
// Everything is closed by now; should anything still hold the event loop, it must not keep a finished command alive.
setTimeout(() => process.exit(code), 1_000).unref()
