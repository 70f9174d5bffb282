/**
 * The fault-injecting wrapper of the storage port for the simulation. One
 * {@link BackendView} is what one simulated process (one event manager) sees of
 * the shared store: every call, whatever its name (the wrapper is a Proxy, so it
 * keeps working when the port gains verbs), finishes after a seeded virtual
 * delay, and while faults are on a call may be rejected before it runs, run
 * with its reply lost, or be slow. A crashed view answers nothing: its calls
 * reject without an effect.
 *
 * The view also reports what the store really did (deliveries with their
 * counts, acks, dead letters) to an {@link Observer}, at the moment of the
 * effect, so invariants can compare the store with what the handlers saw.
 */
import type { GroupReader, ReadEntry, ReadRequest, StreamBackend } from '../../src/backend/types.js'
import { BackendError } from '../../src/errors.js'
import type { Prng } from './prng.js'

/** How calls of a view misbehave while faults are on (probabilities per call). */
export interface FaultRates {
  readonly reject: number
  readonly lostReply: number
  readonly slow: number
}

export interface FaultSwitch {
  /** Whether faults are injected now. */
  readonly on: boolean
}

/** What the store did, as seen by the wrapper. */
export interface Observer {
  /** Entries handed to `consumer` (read, claimed, redelivered); `lost` when the caller never got the reply. */
  delivered(view: string, call: string, consumer: string, entries: readonly ReadEntry[], lost: boolean, request?: ReadRequest): void
  /** Entries settled at the store (ack, dead letter). */
  settled(view: string, call: string, ids: readonly string[]): void
  /** A fault hit a call involving these ids (or `consumer`'s leases). */
  disturbed(view: string, call: string, ids: readonly string[], consumer: string | undefined): void
  /** One line for the verbose trace. */
  trace(line: string): void
}

export interface ViewOptions {
  readonly name: string
  readonly prng: Prng
  readonly faults: FaultSwitch
  readonly rates: FaultRates
  /** Largest ordinary delay of a call, ms (each call waits 0..this before and after). */
  readonly maxDelayMs: number
  /** Delay of a slow call, ms. */
  readonly slowMs: number
  readonly observer: Observer
}

/** A simulated connection error: transient, as the engine sees a reset connection. */
export class SimulatedFault extends BackendError {
  constructor(what: string) {
    super(`simulated fault: ${what}`)
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Ids named in a call's arguments (ack, redeliver, renewLeases, deadLetter, giveBack). */
function idsOfArgs(method: string, args: readonly unknown[]): string[] {
  const list = args.find((a) => Array.isArray(a)) as unknown[] | undefined
  if (list === undefined) return []
  // Items with an id: a dead letter, or a give-back (a failed one leaves the entry pending with its count: a later
  // claim counts one more delivery, seed 16227).
  if (method === 'deadLetter' || method === 'giveBack') return list.map((l) => (l as { id: string }).id)
  return list.filter((x): x is string => typeof x === 'string')
}

/** The consumer argument of a call, when it has one. */
function consumerOf(method: string, args: readonly unknown[]): string | undefined {
  const c = args[2]
  return ['read', 'readMany', 'redeliver', 'renewLeases', 'claimIdle'].includes(method) && typeof c === 'string' ? c : undefined
}

const READ_ONLY = new Set(['consumers', 'groups', 'topicInfo', 'topics', 'ping', 'dlqList', 'dlqGet', 'dlqCount', 'listScheduled', 'countScheduled'])

export class BackendView {
  readonly name: string
  readonly backend: StreamBackend
  #dead = false
  readonly #readers = new Set<GroupReader>()
  readonly #o: ViewOptions
  readonly #inner: StreamBackend
  calls = 0
  faultsInjected = 0

  constructor(inner: StreamBackend, options: ViewOptions) {
    this.name = options.name
    this.#o = options
    this.#inner = inner
    this.backend = new Proxy(inner, {
      get: (target, property, receiver) => {
        const value = Reflect.get(target, property, receiver) as unknown
        if (typeof property !== 'string' || typeof value !== 'function') return value
        if (property === 'close') return () => Promise.resolve() // the shared store outlives each process
        if (property === 'createReader') return () => this.#reader(target.createReader())
        return (...args: unknown[]) => this.#call(property, args, () => (value as (...a: unknown[]) => Promise<unknown>).apply(target, args))
      },
    })
  }

  /** The process died: from now on its calls have no effect (nor does the reply of a call in flight reach it). */
  crash(): void {
    this.#dead = true
    // Its connections die with it: blocked reads end without taking entries.
    for (const reader of this.#readers) void reader.close()
  }

  /** Whether the process crashed (a method, so that a check after an await is not narrowed away). */
  isDead(): boolean {
    return this.#dead
  }

  #delay(): number {
    const max = this.#o.maxDelayMs
    // Mostly short, now and then up to the maximum: reorders replies against timers.
    return this.#o.prng.chance(0.7) ? this.#o.prng.int(0, Math.min(2, max)) : this.#o.prng.int(0, max)
  }

  #fault(method: string): 'none' | 'reject' | 'lostReply' | 'slow' {
    if (!this.#o.faults.on) return 'none'
    const r = this.#o.prng.next()
    const { reject, lostReply, slow } = this.#o.rates
    if (r < reject) return 'reject'
    if (r < reject + lostReply) return READ_ONLY.has(method) ? 'reject' : 'lostReply'
    if (r < reject + lostReply + slow) return 'slow'
    return 'none'
  }

  async #call(method: string, args: unknown[], run: () => Promise<unknown>): Promise<unknown> {
    this.calls++
    const o = this.#o
    await sleep(this.#delay())
    if (this.isDead()) throw new SimulatedFault(`${this.name} is down`)
    const fault = this.#fault(method)
    const ids = idsOfArgs(method, args)
    const consumer = consumerOf(method, args)
    if (fault !== 'none') {
      this.faultsInjected++
      o.observer.trace(`${this.name} fault ${fault} on ${method}${ids.length > 0 ? ` [${ids.join(',')}]` : ''}`)
      o.observer.disturbed(this.name, method, ids, consumer)
    }
    if (fault === 'reject') throw new SimulatedFault(`${method} rejected`)
    if (fault === 'slow') await sleep(o.slowMs)
    if (this.isDead()) throw new SimulatedFault(`${this.name} is down`)
    const result = await run()
    const lost = fault === 'lostReply'
    this.#observe(method, args, result, lost)
    await sleep(this.#delay())
    if (lost) {
      // A read-ahead round's reply is one array per read: its entries, in order.
      const entries = method === 'readMany' ? (result as ReadEntry[][]).flat() : result
      const got = Array.isArray(entries) ? entries.map((e) => (typeof e === 'string' ? e : (e as { id?: string }).id)).filter((x) => x !== undefined) : []
      if (got.length > 0) o.observer.disturbed(this.name, method, got, consumer)
      throw new SimulatedFault(`reply of ${method} lost`)
    }
    if (this.isDead()) throw new SimulatedFault(`${this.name} is down`)
    return result
  }

  #observe(method: string, args: unknown[], result: unknown, lost: boolean): void {
    const o = this.#o.observer
    const consumer = typeof args[2] === 'string' ? args[2] : ''
    if (method === 'read') o.delivered(this.name, method, consumer, result as ReadEntry[], lost, args[3] as ReadRequest)
    else if (method === 'readMany') {
      // One call for the whole round: every entry of every sub-read is a delivery (a lost reply loses them all).
      const counts = args[3] as readonly number[]
      const request: ReadRequest = { count: counts.reduce((a, b) => a + b, 0), blockMs: args[4] as number, from: 'new' }
      o.delivered(this.name, method, consumer, (result as ReadEntry[][]).flat(), lost, request)
    }
    else if (method === 'redeliver') o.delivered(this.name, method, consumer, result as ReadEntry[], lost)
    else if (method === 'claimIdle') o.delivered(this.name, method, consumer, (result as { entries: ReadEntry[] }).entries, lost)
    else if (method === 'ack') o.settled(this.name, method, idsOfArgs(method, args))
    else if (method === 'deadLetter') o.settled(this.name, method, idsOfArgs(method, args))
    else if (method !== 'renewLeases' && !READ_ONLY.has(method) && Array.isArray(result) && result.length > 0 && typeof result[0] === 'object') {
      // An unknown verb returning entries (e.g. a give-back or restore-count call): a delivery to `consumer`.
      const entries = (result as unknown[]).filter((e): e is ReadEntry => typeof e === 'object' && e !== null && 'deliveryCount' in e)
      if (entries.length > 0) o.delivered(this.name, method, consumer, entries, lost)
    }
  }

  #reader(inner: GroupReader): GroupReader {
    this.#readers.add(inner)
    const readMany = inner.readMany?.bind(inner)
    return {
      read: (topic, group, consumer, request) =>
        this.#call('read', [topic, group, consumer, request], () => inner.read(topic, group, consumer, request)).then((entries) => entries as ReadEntry[]),
      // Read-ahead is one port call: one delay, one fault draw (a rejection, a slow call or a lost reply hits the whole round).
      ...(readMany === undefined
        ? {}
        : {
            readMany: (topic: string, group: string, consumer: string, counts: readonly number[], blockMs: number) =>
              this.#call('readMany', [topic, group, consumer, counts, blockMs], () => readMany(topic, group, consumer, counts, blockMs)).then((replies) => replies as ReadEntry[][]),
          }),
      close: () => {
        this.#readers.delete(inner)
        return inner.close()
      },
    }
  }

  get inner(): StreamBackend {
    return this.#inner
  }
}
