import { pino, type Logger } from 'pino'

export type { Logger }

/** The default logger: silent. Pass any pino logger as the `logger` option to see what happens. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}
