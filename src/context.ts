import { AsyncLocalStorage } from 'node:async_hooks'
import type { Event } from './event.js'

/** What is known about the event being handled in the current async context. */
export interface HandlingContext {
  readonly event: Event
  readonly topic: string
  readonly group: string
}

const storage = new AsyncLocalStorage<HandlingContext>()

/**
 * Runs `fn` as the handling of `context.event`: events published inside it,
 * however deep in its async calls, inherit the event's correlation id.
 */
export function runInHandlingContext<T>(context: HandlingContext, fn: () => T): T {
  return storage.run(context, fn)
}

/**
 * Runs `fn(...args)` in `context` (none: outside any handling), without a
 * closure: how the engine re-enters a message's context on its hot path.
 * @internal
 */
export function runInContext<A extends unknown[], T>(context: HandlingContext | undefined, fn: (...args: A) => T, ...args: A): T {
  return storage.run(context as HandlingContext, fn, ...args)
}

/**
 * `subscriber.next(value)` in `context`: how a subscription emits a message in
 * its own handling context (the message itself is the context), without a closure.
 * @internal
 */
export function emitInContext<T>(context: HandlingContext, subscriber: { next(value: T): void }, value: T): void {
  storage.run(context, emitTo, subscriber, value)
}

function emitTo<T>(subscriber: { next(value: T): void }, value: T): void {
  subscriber.next(value)
}

/** The event being handled in this async context, if any. */
export function currentHandlingContext(): HandlingContext | undefined {
  return storage.getStore()
}

/** The correlation id inherited by an event published now: the handled event's correlation id, else its id. */
export function inheritedCorrelationId(): string | undefined {
  const ctx = storage.getStore()
  if (ctx === undefined) return undefined
  return ctx.event.correlationId ?? ctx.event.id
}
