import type { Observable, Subscription } from 'rxjs'
import { declareDemand, releaseUnhandled, type Message } from './message.js'

/**
 * The messages of a topic as an async iterator (`for await`), with the same
 * contract as the library's operators: each message is started (`begin()`)
 * as it is handed to the loop body, and messages that `begin()` refuses
 * (given back, superseded, stopping) are skipped; messages waiting in the
 * iterator's buffer keep their timeout paused; the credit is what the loop
 * body has not settled yet (its demand is one message at a time, plus the
 * read-ahead); leaving the loop (`break`, `return`, a throw) stops the
 * subscription and gives back every message not yet handed out. A message
 * handed out and still unsettled keeps its lease until it is settled or the
 * subscription's drain timeout passes. The Observable's error is thrown from
 * the loop; its completion (`events.close()`) ends the loop.
 *
 * ## Example
 * ```ts
 * for await (const msg of events.topic('orders').messages({ group: 'billing' })) {
 *   try { await bill(msg.event.payload, { signal: msg.signal }); await msg.ack() }
 *   catch (error) { await msg.nack(error) }
 *   if (shuttingDown) break                       // the rest is given back at once
 * }
 * ```
 * @param source a `consume()` Observable (subscribed on the first `next()`)
 * @returns an async iterable iterator of started messages
 */
export function iterateMessages<P>(source: Observable<Message<P>>): AsyncIterableIterator<Message<P>> {
  const demandHolder = {}
  const buffer: Message<P>[] = []
  let waiter: { resolve: (result: IteratorResult<Message<P>>) => void; reject: (error: unknown) => void } | undefined
  let subscription: Subscription | undefined
  let done = false
  let failure: { error: unknown } | undefined

  const giveBackBuffered = (): void => {
    for (const message of buffer.splice(0)) releaseUnhandled(message)
  }

  /** The next startable message of the buffer, started; undefined when the buffer has none. */
  const takeStarted = (): Message<P> | undefined => {
    for (;;) {
      const message = buffer.shift()
      if (message === undefined) return undefined
      if (message.begin()) return message
    }
  }

  const stop = (): void => {
    done = true
    const running = subscription
    subscription = undefined
    giveBackBuffered()
    running?.unsubscribe()
  }

  const settleWaiter = (): void => {
    const w = waiter
    if (w === undefined) return
    const message = takeStarted()
    if (message !== undefined) {
      waiter = undefined
      w.resolve({ value: message, done: false })
      return
    }
    if (failure !== undefined) {
      waiter = undefined
      w.reject(failure.error)
    } else if (done) {
      waiter = undefined
      w.resolve({ value: undefined, done: true })
    }
  }

  const subscribe = (): void => {
    subscription = source.subscribe({
      next: (message) => {
        declareDemand(message, demandHolder, 1)
        if (done) {
          releaseUnhandled(message)
          return
        }
        buffer.push(message)
        // Waiting for the loop body: a library consumer starts what it takes, so its timeout waits.
        if (waiter === undefined) message.holdUntil(Number.POSITIVE_INFINITY)
        settleWaiter()
      },
      error: (error: unknown) => {
        failure = { error }
        done = true
        subscription = undefined
        giveBackBuffered()
        settleWaiter()
      },
      complete: () => {
        done = true
        subscription = undefined
        settleWaiter()
      },
    })
  }

  const iterator: AsyncIterableIterator<Message<P>> = {
    next(): Promise<IteratorResult<Message<P>>> {
      if (waiter !== undefined) return Promise.reject(new Error('messages(): next() called before the previous next() resolved'))
      const message = takeStarted()
      if (message !== undefined) return Promise.resolve({ value: message, done: false })
      if (failure !== undefined) {
        const { error } = failure
        failure = undefined
        return Promise.reject(error instanceof Error ? error : new Error(String(error)))
      }
      if (done) return Promise.resolve({ value: undefined, done: true })
      const result = new Promise<IteratorResult<Message<P>>>((resolve, reject) => {
        waiter = { resolve, reject }
      })
      if (subscription === undefined) subscribe()
      return result
    },
    return(): Promise<IteratorResult<Message<P>>> {
      stop()
      const w = waiter
      waiter = undefined
      w?.resolve({ value: undefined, done: true })
      return Promise.resolve({ value: undefined, done: true })
    },
    throw(error?: unknown): Promise<IteratorResult<Message<P>>> {
      stop()
      return Promise.reject(error instanceof Error ? error : new Error(String(error)))
    },
    [Symbol.asyncIterator]() {
      return iterator
    },
  }
  return iterator
}
