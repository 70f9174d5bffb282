import { TestScheduler } from 'rxjs/testing'
import { expect } from 'vitest'
import { messageWithdrawn, releaseMessage, type Message, type RetryDefaults } from '../../src/consumer/message.js'
import type { Event } from '../../src/event.js'
import type { NackOptions, Outcome } from '../../src/settle.js'
import type { JoinedPair, Late, Window, WindowResult } from '../../operators/window-types.js'

let entries = 0

/** A test double of our own `Message` interface: counts every settlement call and hold. */
export class FakeMessage implements Message<string> {
  readonly event: Event<string>
  readonly streamId: string
  readonly topic = 'test-topic'
  readonly group = 'test-group'
  readonly consumer: string = 'test-consumer'
  deliveryCount = 1
  readonly maxDeliveries = 4
  readonly retry: RetryDefaults = { maxRetries: 3, initialDelay: 1_000 }
  acks = 0
  nacks = 0
  deadLetters = 0
  readonly reasons: unknown[] = []
  readonly nackOptions: (NackOptions | undefined)[] = []
  readonly holds: number[] = []
  /** Times it was given back unsettled (`releaseUnhandled`). */
  released = 0
  /** Set to make it withdrawn (its subscription stops gracefully). */
  withdrawn = false
  #outcome: Outcome | undefined

  constructor(
    readonly id: string,
    timestamp: number,
    key = '',
  ) {
    this.streamId = `${Number.isFinite(timestamp) ? timestamp : 0}-${entries++}`
    this.event = { id, name: 'test.event', payload: id, headers: { key }, timestamp }
  }

  /** A redelivery of the same stream entry: same stream id, the next delivery count, unsettled. */
  redelivered(): FakeMessage {
    const copy = new FakeMessage(this.id, this.event.timestamp, this.key)
    Object.assign(copy, { streamId: this.streamId, deliveryCount: this.deliveryCount + 1, consumer: this.consumer })
    // what its subscription put on it (credit limit, store, idle probe)
    for (const symbol of Object.getOwnPropertySymbols(this)) Object.assign(copy, { [symbol]: (this as unknown as Record<symbol, unknown>)[symbol] })
    return copy
  }

  /** Another view of this delivery (as `decode()` makes): another object, same entry, same settlement. */
  view(): Message<string> {
    const inner = this as FakeMessage
    return {
      event: inner.event,
      streamId: inner.streamId,
      topic: inner.topic,
      group: inner.group,
      consumer: inner.consumer,
      deliveryCount: inner.deliveryCount,
      maxDeliveries: inner.maxDeliveries,
      retry: inner.retry,
      get outcome() {
        return inner.outcome
      },
      ack: () => inner.ack(),
      nack: (error: unknown, options?: NackOptions) => inner.nack(error, options),
      deadLetter: (reason: unknown) => inner.deadLetter(reason),
      holdUntil: (until: number) => inner.holdUntil(until),
      begin: () => inner.begin(),
      signal: inner.signal,
      withPayload: <A>(payload: A) => inner.withPayload(payload),
    }
  }

  get [messageWithdrawn](): boolean {
    return this.withdrawn && this.#outcome === undefined
  }

  [releaseMessage](): void {
    this.released++
  }

  get key(): string {
    return this.event.headers['key'] ?? ''
  }

  get outcome(): Outcome | undefined {
    return this.#outcome
  }

  /** Called on the first settlement call (a credit-based source frees one unit). */
  onSettled: (() => void) | undefined

  /** How many settlement calls of any kind were made. */
  get calls(): number {
    return this.acks + this.nacks + this.deadLetters
  }

  #settled(): void {
    if (this.calls === 1) this.onSettled?.()
  }

  ack(): Promise<Outcome> {
    this.acks++
    this.#outcome ??= 'acked'
    this.#settled()
    return Promise.resolve(this.#outcome)
  }

  nack(error: unknown, options?: NackOptions): Promise<Outcome> {
    this.nacks++
    this.reasons.push(error)
    this.nackOptions.push(options)
    this.#outcome ??= 'nacked'
    this.#settled()
    return Promise.resolve(this.#outcome)
  }

  deadLetter(reason: unknown): Promise<Outcome> {
    this.deadLetters++
    this.reasons.push(reason)
    this.#outcome ??= 'dead-lettered'
    this.#settled()
    return Promise.resolve(this.#outcome)
  }

  holdUntil(untilMs: number): void {
    this.holds.push(untilMs)
  }

  /** Handler attempts begun. */
  begun = 0
  readonly signal: AbortSignal = new AbortController().signal

  begin(): boolean {
    if (this.#outcome !== undefined || this[messageWithdrawn]) return false
    this.begun++
    return true
  }

  withPayload<A>(_payload: A): Message<A> {
    throw new Error('not used by these tests')
  }
}

/** A message `id` at event time `timestamp`, with `key` in its headers. */
export const msg = (id: string, timestamp: number, key = ''): FakeMessage => new FakeMessage(id, timestamp, key)

/** The key header of a fake message (the `key` option of the tests). */
export const keyOf = (m: FakeMessage): string => m.key

const ids = (messages: readonly FakeMessage[]): string => messages.map((m) => m.id).join('')

/** A window as a short string: `key[start,end)!:ids` (`!` when early, no key when `''`). */
export function show(value: Window<FakeMessage> | Late<FakeMessage> | WindowResult<unknown, FakeMessage>): string {
  if (value.kind === 'late') return `late:${value.message.id}@${value.streamTime}`
  const early = value.early ? '!' : ''
  const body = value.kind === 'window' ? ids(value.messages) : JSON.stringify(value.value)
  return `${value.key}[${value.start},${value.end})${early}:${body}`
}

/** A join result as a short string: `left+right` (`_` for an empty side). */
export function showPair(pair: JoinedPair<FakeMessage | undefined, FakeMessage | undefined>): string {
  return `${pair.left?.id ?? '_'}+${pair.right?.id ?? '_'}`
}

/** A TestScheduler asserting with vitest's deep equality. */
export const testScheduler = (): TestScheduler =>
  new TestScheduler((actual, expected) => {
    expect(actual).toEqual(expected)
  })
