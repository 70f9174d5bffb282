/**
 * What the CLI writes: where (stdout for results, stderr for progress and
 * errors) and how (aligned tables, short times).
 */

/** Control characters other than tab and newline (C0, DEL, C1): terminal escape sequences start with them. */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g

/**
 * Text safe for a terminal: stream data is untrusted, and an ESC or OSC in an
 * event name or payload must not act on the operator's terminal. Each control
 * character becomes a `\uXXXX` escape (valid inside JSON strings too).
 *
 * @example
 * ```ts
 * printable('a\u001b[2Jb') // 'a\\u001b[2Jb'
 * ```
 */
export function printable(text: string): string {
  return text.replace(CONTROL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** Wraps streams so that everything written is {@link printable}; only {@link CliIo.control} writes raw (our own sequences). */
export function printableIo(io: CliIo): CliIo {
  return {
    out: (text) => io.out(printable(text)),
    err: (text) => io.err(printable(text)),
    env: io.env,
    ...(io.isTTY === undefined ? {} : { isTTY: io.isTTY }),
    ...(io.control === undefined ? {} : { control: io.control.bind(io) }),
  }
}

/** Cursor home, then clear the screen: a `--watch` frame replaces the previous one. */
export const CLEAR_SCREEN = '\u001b[H\u001b[2J'

/** The CLI's streams and environment; tests pass their own. */
export interface CliIo {
  /** Results: tables, or JSON with `--json`. */
  out(text: string): void
  /** Progress, notices and errors. */
  err(text: string): void
  readonly env: NodeJS.ProcessEnv
  /** True when stdout is a terminal: `--watch` then redraws in place. */
  readonly isTTY?: boolean
  /** Writes a terminal control sequence to stdout as is (never stream data). */
  control?(sequence: string): void
}

/**
 * Aligns rows into columns under a header, two spaces apart.
 *
 * @example
 * ```ts
 * table(['TOPIC', 'LENGTH'], [['orders', '10']]) // 'TOPIC   LENGTH\norders  10'
 * ```
 */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}

/**
 * A short human duration: `850ms`, `12.3s`, `4m 05s`, `3h 20m`, `2d 4h`.
 *
 * @example
 * ```ts
 * humanDuration(65_000) // '1m 05s'
 * ```
 */
export function humanDuration(ms: number): string {
  const sign = ms < 0 ? '-' : ''
  const abs = Math.abs(ms)
  if (abs < 1_000) return `${sign}${Math.round(abs)}ms`
  if (abs < 60_000) return `${sign}${(abs / 1_000).toFixed(1)}s`
  const pad = (n: number): string => String(n).padStart(2, '0')
  if (abs < 3_600_000) return `${sign}${Math.floor(abs / 60_000)}m ${pad(Math.floor((abs % 60_000) / 1_000))}s`
  if (abs < 86_400_000) return `${sign}${Math.floor(abs / 3_600_000)}h ${pad(Math.floor((abs % 3_600_000) / 60_000))}m`
  return `${sign}${Math.floor(abs / 86_400_000)}d ${Math.floor((abs % 86_400_000) / 3_600_000)}h`
}

/**
 * An epoch-ms time as ISO 8601 (UTC), or `-`.
 *
 * @example
 * ```ts
 * isoTime(0) // '1970-01-01T00:00:00.000Z'
 * ```
 */
export function isoTime(ms: number | null | undefined): string {
  return ms === null || ms === undefined || !Number.isFinite(ms) ? '-' : new Date(ms).toISOString()
}

/**
 * Cuts text to `max` characters (with `…`) and puts it on one line.
 *
 * @example
 * ```ts
 * truncate('a\nb', 10) // 'a b'
 * ```
 */
export function truncate(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ')
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat
}

/**
 * JSON for `--json`: indented for one document, one line per item when streaming.
 *
 * @example
 * ```ts
 * json({ a: 1 }) // '{\n  "a": 1\n}'
 * ```
 */
export function json(value: unknown, compact = false): string {
  return compact ? JSON.stringify(value) : JSON.stringify(value, null, 2)
}
