/**
 * Reading raw stream entries in either wire layout, as `XRANGE` returns them,
 * without the library's decoder: tests that look at what was written (event
 * ids, names, the traceparent) do not depend on the layout a publisher used.
 *
 * - five fields (`EVENT_WIRE_FORMAT=fields`): `id`, `name`, `ts`, `headers`,
 *   `payload`, optional `cid`, `traceparent`;
 * - compact (the default): `meta` = JSON `[id, name, ts, headers, cid?, traceparent?]`, `payload`.
 */

/** The value of field `name` (at a field-name position), or undefined. */
export function fieldValue(fields: readonly string[], name: string): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1]
  return undefined
}

/** The envelope of an entry of either layout; undefined parts are absent (or the entry is neither layout). */
export function entryEnvelope(fields: readonly string[]): { id?: string; name?: string; ts?: number; cid?: string; traceparent?: string; payload?: string } {
  const payload = fieldValue(fields, 'payload')
  const meta = fieldValue(fields, 'meta')
  if (meta !== undefined) {
    let parsed: unknown
    try {
      parsed = JSON.parse(meta)
    } catch {
      return {} // a malformed meta (a hostile entry): no envelope
    }
    if (!Array.isArray(parsed)) return {}
    const [id, name, ts, , cid, traceparent] = parsed as [unknown, unknown, unknown, unknown, unknown, unknown]
    return {
      ...(typeof id === 'string' ? { id } : {}),
      ...(typeof name === 'string' ? { name } : {}),
      ...(typeof ts === 'number' ? { ts } : {}),
      ...(typeof cid === 'string' ? { cid } : {}),
      ...(typeof traceparent === 'string' ? { traceparent } : {}),
      ...(payload === undefined ? {} : { payload }),
    }
  }
  const out: { id?: string; name?: string; ts?: number; cid?: string; traceparent?: string; payload?: string } = {}
  for (const key of ['id', 'name', 'cid', 'traceparent', 'payload'] as const) {
    const value = fieldValue(fields, key)
    if (value !== undefined) out[key] = value
  }
  const ts = fieldValue(fields, 'ts')
  if (ts !== undefined) out.ts = Number(ts)
  return out
}

/** The event id of an entry of either layout ('' when it has none). */
export const entryEventId = (fields: readonly string[]): string => entryEnvelope(fields).id ?? ''

/** The event name of an entry of either layout ('' when it has none). */
export const entryName = (fields: readonly string[]): string => entryEnvelope(fields).name ?? ''
