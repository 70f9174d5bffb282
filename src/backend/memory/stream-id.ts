import { BackendError } from '../../errors.js'

/** A Redis stream id `<ms>-<seq>`, as two safe integers. */
export interface StreamId {
  readonly ms: number
  readonly seq: number
}

/** The smallest id, `0-0`. */
export const ZERO_ID: StreamId = { ms: 0, seq: 0 }

const ID_PATTERN = /^(\d+)(?:-(\d+))?$/

/** Orders two ids: negative when `a` comes first, 0 when equal, positive otherwise. */
export function compareIds(a: StreamId, b: StreamId): number {
  return a.ms !== b.ms ? a.ms - b.ms : a.seq - b.seq
}

/** The wire form `<ms>-<seq>` of an id. */
export function formatId(id: StreamId): string {
  return `${id.ms}-${id.seq}`
}

/**
 * Parses an id as Redis does in commands: `<ms>-<seq>` or `<ms>` alone, whose
 * missing sequence is the smallest (`min`, start of a range) or the largest
 * (`max`, end of a range). Parts beyond `Number.MAX_SAFE_INTEGER` are refused.
 *
 * @throws BackendError for an invalid id, like Redis' `ERR Invalid stream ID`.
 */
export function parseId(text: string, missingSeq: 'min' | 'max' = 'min'): StreamId {
  const match = ID_PATTERN.exec(text)
  if (match !== null) {
    const ms = Number(match[1])
    const seqText = match[2]
    const seq = seqText === undefined ? (missingSeq === 'min' ? 0 : Number.MAX_SAFE_INTEGER) : Number(seqText)
    if (Number.isSafeInteger(ms) && Number.isSafeInteger(seq)) return { ms, seq }
  }
  throw new BackendError('Invalid stream ID specified as stream command argument')
}
