import { from, Observable, type ObservableInput, type OperatorFunction } from 'rxjs'
import { isPermanentError } from '../src/errors.js'
import { isSettleable } from '../src/settle.js'
import { beginAttempt, declareDemandOf, giveBack, holdForLater, releaseHeld, settleQuietly, signalOf, type HandlerContext } from './handle-each.js'

/** A stable 32-bit hash (FNV-1a) of a key. */
function hashKey(key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** One lane: the values of the keys hashed to it, run one after another. */
interface Lane<T> {
  readonly queue: T[]
  running: boolean
}

/**
 * Runs `project` for values of different keys concurrently while values with
 * the same key run one after another, in arrival order. Keys are spread over
 * `concurrency` lanes by hash (as Kafka spreads keys over partitions).
 *
 * For messages (and other settleables) it follows the message contract like
 * `handleEach`: each is started with `begin()` (skipped when refused: settled,
 * given back, superseded), its timeout waits while it is queued in its lane,
 * the project gets the attempt's `signal`, and `orderedBy` settles what it
 * handles: acked when `project` completes (unless `project` settled it
 * itself), nacked when it fails (dead-lettered for bad input) — so one failing
 * message never ends the subscription, for any key. An error of a value that
 * is not settleable ends the subscription, as in `concatMap`. On unsubscribe,
 * running projects finish and settle; queued messages are given back.
 *
 * ## Example
 * ```ts
 * import { orderedBy } from 'rx-redis-streams/operators'
 * messages$.pipe(orderedBy((msg) => msg.event.headers['accountId'] ?? '', 8, (msg) => apply(msg))).subscribe()
 * ```
 * @param key the ordering key of a value
 * @param concurrency how many lanes (keys) run at once
 * @param project the work for one value
 * @returns an operator emitting the results of `project`
 */
export function orderedBy<T, R>(
  key: (value: T) => string,
  concurrency: number,
  project: (value: T, context: HandlerContext) => ObservableInput<R>,
): OperatorFunction<T, R> {
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${concurrency}`)
  return (source) =>
    new Observable<R>((subscriber) => {
      const demandHolder = {}
      const lanes = new Map<number, Lane<T>>()
      let running = 0
      let sourceDone = false

      const completeIfDone = (): void => {
        if (sourceDone && running === 0 && lanes.size === 0) subscriber.complete()
      }

      const next = (laneId: number, lane: Lane<T>): void => {
        for (;;) {
          const value = lane.queue.shift()
          if (value === undefined) {
            lane.running = false
            lanes.delete(laneId)
            completeIfDone()
            return
          }
          if (!isSettleable(value)) {
            run(laneId, lane, value, 1)
            return
          }
          releaseHeld(value, Date.now())
          if (beginAttempt(value)) {
            run(laneId, lane, value, 1)
            return
          }
          giveBack(value)
        }
      }

      const run = (laneId: number, lane: Lane<T>, value: T, attempt: number): void => {
        lane.running = true
        running++
        let finished = false
        const finish = (error: unknown, failed: boolean): void => {
          if (finished) return
          finished = true
          running--
          if (isSettleable(value)) {
            if (failed) void settleQuietly(() => (isPermanentError(error) ? value.deadLetter(error) : value.nack(error)))
            else if (value.outcome === undefined) void settleQuietly(() => value.ack())
          } else if (failed) {
            subscriber.error(error)
            return
          }
          next(laneId, lane)
        }
        try {
          const signal = isSettleable(value) ? signalOf(value) : new AbortController().signal
          from(project(value, { signal, attempt })).subscribe({
            next: (result) => {
              if (!subscriber.closed) subscriber.next(result)
            },
            error: (error: unknown) => finish(error, true),
            complete: () => finish(undefined, false),
          })
        } catch (error) {
          finish(error, true)
        }
      }

      const subscription = source.subscribe({
        next: (value) => {
          const laneId = hashKey(key(value)) % concurrency
          let lane = lanes.get(laneId)
          if (lane === undefined) {
            lane = { queue: [], running: false }
            lanes.set(laneId, lane)
          }
          if (isSettleable(value)) declareDemandOf(value, demandHolder, concurrency)
          lane.queue.push(value)
          if (lane.running) {
            // Waiting behind its key: a library operator starts what it queues, so its timeout waits.
            if (isSettleable(value)) holdForLater(value)
          } else {
            next(laneId, lane)
          }
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => {
          sourceDone = true
          completeIfDone()
        },
      })
      return () => {
        subscription.unsubscribe()
        for (const lane of lanes.values()) {
          for (const value of lane.queue.splice(0)) if (isSettleable(value)) giveBack(value)
        }
      }
    })
}
