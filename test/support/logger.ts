/** A logger for tests that check what the library logs. */
import { Writable } from 'node:stream'
import { pino, type Logger } from 'pino'

/** A pino logger (warn and above) whose records are kept as text. */
export function capturingLogger(): { logger: Logger; lines: string[] } {
  const lines: string[] = []
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const text of chunk.toString('utf8').split('\n')) if (text.length > 0) lines.push(text)
      callback()
    },
  })
  return { logger: pino({ level: 'warn' }, sink), lines }
}
