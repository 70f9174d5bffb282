import { concatMap, groupBy, mergeMap, type ObservableInput, type OperatorFunction } from 'rxjs'

/** A stable 32-bit hash (FNV-1a) of a key. */
function hashKey(key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/**
 * Runs `project` for values of different keys concurrently while values with
 * the same key run one after another, in arrival order. Keys are spread over
 * `concurrency` lanes by hash (as Kafka spreads keys over partitions).
 *
 * ## Example
 * ```ts
 * import { orderedBy, handleEach } from 'rx-redis-streams/operators'
 * messages$.pipe(orderedBy((msg) => msg.event.headers['accountId'] ?? '', 8, (msg) => apply(msg).then(() => msg.ack())))
 * ```
 * @param key the ordering key of a value
 * @param concurrency how many keys run at once
 * @param project the work for one value
 * @returns an operator emitting the results of `project`
 */
export function orderedBy<T, R>(key: (value: T) => string, concurrency: number, project: (value: T) => ObservableInput<R>): OperatorFunction<T, R> {
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${concurrency}`)
  return (source) =>
    source.pipe(
      groupBy((value) => hashKey(key(value)) % concurrency),
      mergeMap((lane) => lane.pipe(concatMap(project))),
    )
}
