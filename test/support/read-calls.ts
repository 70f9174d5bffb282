/**
 * A recording wrapper of the storage port for the read-ahead tests (issue #10):
 * which reads of new entries the pull loop sent, as single reads or rounds.
 */
import type { GroupReader, ReadEntry, StreamBackend } from '../../src/backend/types.js'

/** One call of a reader: a single read or a read-ahead round, what it asked for and got. */
export interface ReadCall {
  readonly kind: 'read' | 'readMany'
  readonly counts: readonly number[]
  /** Messages emitted and not settled when the call was made (the test's own count). */
  readonly unsettled: number
  /** The block time asked for (0: a round sent ahead, not blocking). */
  readonly blockMs: number
  /** Entries asked for by this reader's calls still in flight when this one was made (a round sent ahead overlaps). */
  readonly inFlight: number
  /** Entries returned by this reader's earlier calls, in all. */
  readonly returned: number
  got?: number[]
}

/**
 * `inner` with readers that record every read of new entries and every
 * read-ahead round (`unsettled()` is sampled at each call). `close` of the
 * wrapper is a no-op: the store outlives the manager made over it.
 * `readAhead: false`: its readers have no `readMany` (a port without the verb).
 */
export function recording(inner: StreamBackend, calls: ReadCall[], unsettled: () => number, readAhead = true): StreamBackend {
  return new Proxy(inner, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver)
      if (typeof value !== 'function') return value
      if (prop === 'close') return () => Promise.resolve()
      if (prop !== 'createReader') return (value as (...a: unknown[]) => unknown).bind(target)
      return (): GroupReader => {
        const reader = (value as () => GroupReader).call(target)
        const readMany = readAhead ? reader.readMany?.bind(reader) : undefined
        let inFlight = 0
        let returned = 0
        return {
          read: async (topic, group, consumer, request) => {
            const call: ReadCall = { kind: 'read', counts: [request.count], unsettled: unsettled(), blockMs: request.blockMs, inFlight, returned }
            if (request.from === 'new') calls.push(call)
            inFlight += request.count
            try {
              const entries = await reader.read(topic, group, consumer, request)
              call.got = [entries.length]
              returned += entries.length
              return entries
            } finally {
              inFlight -= request.count
            }
          },
          ...(readMany === undefined
            ? {}
            : {
                readMany: async (topic: string, group: string, consumer: string, counts: readonly number[], blockMs: number): Promise<ReadEntry[][]> => {
                  const call: ReadCall = { kind: 'readMany', counts: [...counts], unsettled: unsettled(), blockMs, inFlight, returned }
                  calls.push(call)
                  const asked = sum(counts)
                  inFlight += asked
                  try {
                    const replies = await readMany(topic, group, consumer, counts, blockMs)
                    call.got = replies.map((r) => r.length)
                    returned += sum(call.got)
                    return replies
                  } finally {
                    inFlight -= asked
                  }
                },
              }),
          close: () => reader.close(),
        }
      }
    },
  })
}

/** The sum of some counts (0 for none). */
export const sum = (xs: readonly number[] | undefined): number => (xs ?? []).reduce((a, b) => a + b, 0)
