/**
 * The deterministic simulation: runs the real engine (subscriptions, acker,
 * handleEach, subscribe, claimer, leases, promoter, DLQ moves) over the memory
 * backend in virtual time, following a generated {@link Scenario}, and checks
 * the invariants of issues #10 and #11 during and after the run.
 *
 * Each simulated process is one event manager over its own {@link BackendView}
 * of one shared MemoryBackend. A crash kills the view (no call of that process
 * has an effect any more, its handlers freeze) and abandons the manager.
 */
import { tap, type Subscription as RxSubscription } from 'rxjs'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import type { ReadEntry, ReadRequest, StreamBackend } from '../../src/backend/types.js'
import { isWithdrawn, type Message } from '../../src/consumer/message.js'
import { newEvent } from '../../src/event.js'
import { createEventManager, type EventManager, type HandlerSubscription } from '../../src/manager.js'
import { entryName } from '../support/entries.js'
import { handleEach } from '../../operators/handle-each.js'
import { drainMicrotasks, SpinError, VirtualClock } from './clock.js'
import { BackendView, type Observer } from './faulty-backend.js'
import { Prng } from './prng.js'
import { generateScenario, isFailure, runBehaviour, type Action, type Api, type Scenario } from './scenario.js'

const GROUP = 'sim-group'
const START_MS = 1_700_000_000_000
/**
 * Two runs of one entry may overlap in one consumer only after the earlier one
 * has run this many consumer timeouts. Infinity: never (issue #10: the copy
 * redelivered after a timeout is not started until the timed-out run returned).
 */
const OVERLAP_AFTER_TIMEOUTS = Number.POSITIVE_INFINITY

interface Run {
  readonly inc: Incarnation
  readonly start: number
  end: number | undefined
  /** The run fails as the engine sees it: throws, nacks, or outlasts the consumer timeout. */
  readonly behaviourFailed: boolean
  /** The handler returned normally (a non-cooperative hang returns late, and its ack may still land). */
  returned: boolean
  readonly deliveryCount: number
}

interface Emission {
  readonly inc: Incarnation
  readonly at: number
  readonly message: Message
  readonly deliveryCount: number
  started: boolean
}

interface EventState {
  readonly n: number
  streamId: string | undefined
  readonly runs: Run[]
  readonly emissions: Emission[]
  /** Highest delivery count the store reported for it. */
  storeCount: number
  readonly storeCounts: Set<number>
  /** A crash, fault, deletion or group loss touched it: deliveries may have been used up without a handler failing. */
  disturbed: boolean
  deleted: boolean
}

interface Incarnation {
  readonly id: number
  readonly consumer: string
  readonly api: Api
  readonly concurrency: number
  readonly view: BackendView
  readonly manager: EventManager
  state: 'live' | 'stopping' | 'stopped' | 'crashed'
  /** When close()/unsubscribe() resolved, or the subscription was seen gone. */
  stoppedAt: number | undefined
  rx: RxSubscription | undefined
  handle: HandlerSubscription | undefined
  readonly active: Map<string, number>
  readonly emitted: Set<Message>
  closing: Promise<void> | undefined
}

export interface SimResult {
  readonly seed: number
  readonly violations: readonly string[]
  readonly trace: readonly string[]
  /** A digest of the trace: equal for two runs of one seed. */
  readonly fingerprint: string
  readonly virtualMs: number
  readonly timersFired: number
  readonly handlerRuns: number
  readonly events: number
  readonly deadLettered: number
}

export interface SimOptions {
  /** Keep the full trace (for replaying one seed). */
  readonly verbose?: boolean
  /** Another store than the virtual-time memory backend (the Redis run). */
  readonly world?: SimWorld
  /** What the consuming processes see of the virtual-time store (a test plants a broken store here). */
  readonly processStore?: (store: MemoryBackend) => StreamBackend
}

/** The clock a run follows: virtual ({@link VirtualClock}) or real (the Redis run). */
export interface SimClock {
  now(): number
  runUntil(untilMs: number, done?: () => boolean): Promise<void>
  readonly fired: number
  onError: (error: unknown) => void
}

/** The store the simulated processes share, and how each process reaches it. */
export interface SimWorld {
  readonly clock: SimClock
  /** The store as an operator sees it (inspection, and the damage actions where it supports them). */
  readonly store: StreamBackend & Partial<Pick<MemoryBackend, 'deleteEntries' | 'trim' | 'destroyGroup'>>
  /** The port one process uses (its own connections); `close()` ends them. */
  processBackend(name: string): StreamBackend
  /** A process died: end its connections. */
  crashed(name: string, backend: StreamBackend): void
  /** Faults on or off (e.g. the TCP proxy's resets and lost replies). */
  faults(on: boolean): void
  /** Per-call delays of the wrapper (0 in real time). */
  readonly callDelays: boolean
  /** The topic of this run (each seed its own on a shared Redis). */
  readonly topic?: string
  /** The longest the settle phase may take, ms (default: 20 stall bounds, at least 2 minutes). */
  readonly settleLimitMs?: number
  /** How long to watch for handler starts after every close() resolved, ms (default: one stall bound). */
  readonly afterCloseMs?: number
}

/** The one-line command that replays a seed. */
export const replayCommand = (seed: number): string => `npm run sim -- --seed ${seed}`

const nameOf = (n: number): string => `sim.e${n}`
const nOfName = (name: string): number | undefined => (name.startsWith('sim.e') ? Number(name.slice(5)) : undefined)
/** The event number of an entry's fields, in either wire layout (five fields or the default compact one). */
function nOfFields(fields: readonly string[] | null): number | undefined {
  if (fields === null) return undefined
  const name = entryName(fields)
  return name === '' ? undefined : nOfName(name)
}

function digest(lines: readonly string[]): string {
  let h = 0x811c9dc5
  for (const line of lines) {
    for (let i = 0; i < line.length; i++) h = Math.imul(h ^ line.charCodeAt(i), 0x01000193) >>> 0
    h = Math.imul(h ^ 10, 0x01000193) >>> 0
  }
  return h.toString(16).padStart(8, '0')
}

/** Runs one seed; never throws for an engine misbehaviour (it becomes a violation). */
export async function runSeed(seed: number, options: SimOptions = {}): Promise<SimResult> {
  const scenario = generateScenario(seed)
  return runScenario(scenario, options)
}

export async function runScenario(scenario: Scenario, options: SimOptions = {}): Promise<SimResult> {
  if (options.world !== undefined) {
    const sim = new Simulation(scenario, options.world, options.verbose === true)
    try {
      await sim.run()
    } catch (error) {
      sim.violation(`harness error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    }
    return sim.result()
  }
  const clock = new VirtualClock(START_MS)
  const store = new MemoryBackend({ now: () => clock.now() })
  const world: SimWorld = {
    clock,
    store,
    processBackend: () => options.processStore?.(store) ?? store,
    crashed: () => undefined,
    faults: () => undefined,
    callDelays: true,
  }
  const sim = new Simulation(scenario, world, options.verbose === true)
  const realRandom = Math.random
  const random = new Prng(scenario.seed ^ 0x5eed)
  const onUnhandled = (reason: unknown): void => sim.violation(`unhandled rejection: ${String(reason instanceof Error ? (reason.stack ?? reason.message) : reason)}`)
  process.on('unhandledRejection', onUnhandled)
  clock.install()
  Math.random = () => random.next()
  try {
    await sim.run()
  } catch (error) {
    sim.violation(error instanceof SpinError ? `busy loop: ${error.message}` : `harness error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
  } finally {
    Math.random = realRandom
    clock.uninstall()
    // Rejections of this run surface within a turn or two.
    await drainMicrotasks()
    await drainMicrotasks()
    process.off('unhandledRejection', onUnhandled)
  }
  return sim.result()
}

class Simulation {
  readonly #s: Scenario
  readonly #clock: SimClock
  readonly #world: SimWorld
  readonly #topic: string
  readonly #t0: number
  readonly #verbose: boolean
  readonly #store: SimWorld['store']
  readonly #prng: Prng
  readonly #faults = { on: false }
  readonly #events: EventState[]
  readonly #byId = new Map<string, EventState>()
  readonly #incarnations: Incarnation[] = []
  readonly #violations: string[] = []
  readonly #trace: string[] = []
  readonly #publisher: EventManager
  readonly #observer: Observer
  #nextInc = 0
  #lastProgressAt: number
  #runsTotal = 0
  #groupIncarnations = 1
  #deadLettered = 0
  #trimmedUnseen = 0
  #pendingActions = new Set<Promise<void>>()
  /** Publish actions under way: the run is not settled while one may still append (seed 12398). */
  #publishing = 0

  constructor(scenario: Scenario, world: SimWorld, verbose: boolean) {
    const clock = world.clock
    this.#s = scenario
    this.#clock = clock
    this.#world = world
    this.#topic = world.topic ?? 'sim-topic'
    this.#t0 = clock.now()
    this.#verbose = verbose
    this.#prng = new Prng(scenario.seed ^ 0xfa17)
    this.#store = world.store
    this.#lastProgressAt = clock.now()
    this.#events = scenario.events.map((e) => ({
      n: e.n,
      streamId: undefined,
      runs: [],
      emissions: [],
      storeCount: 0,
      storeCounts: new Set(),
      disturbed: false,
      deleted: false,
    }))
    clock.onError = (error) => this.violation(`a timer callback threw: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    this.#observer = {
      delivered: (view, call, consumer, entries, lost, request) => this.#delivered(view, call, consumer, entries, lost, request),
      settled: (_view, _call, ids) => {
        this.#progress()
        for (const id of ids) {
          const ev = this.#byId.get(id)
          if (ev !== undefined) this.log(`store settled ${id} (e${ev.n}) by ${_call}`)
        }
      },
      disturbed: (_view, _call, ids, consumer) => {
        for (const id of ids) this.#disturb(id)
        if (consumer !== undefined) this.#disturbConsumer(consumer)
      },
      trace: (line) => this.log(line),
    }
    // The publisher and DLQ reader: a process of its own, without faults.
    const view = this.#view('publisher', { reject: 0, lostReply: 0, slow: 0 })
    this.#publisher = this.#manager(view.backend)
  }

  // ---- bookkeeping -----------------------------------------------------------

  log(line: string): void {
    this.#trace.push(`${this.#clock.now() - this.#t0} ${line}`)
  }

  violation(text: string): void {
    this.log(`VIOLATION ${text}`)
    // One line per kind of violation and process (the first occurrence), so one bug does not flood the report.
    const kind = text.replace(/e\d+ \([^)]*\)|e\d+|\d+/g, '#')
    if (this.#violationKinds.has(kind) || this.#violations.length >= 20) return
    this.#violationKinds.add(kind)
    this.#violations.push(`t=${this.#clock.now() - this.#t0}ms ${text}`)
  }

  readonly #violationKinds = new Set<string>()

  #progress(): void {
    this.#lastProgressAt = this.#clock.now()
  }

  #event(id: string, fields: readonly string[] | null): EventState | undefined {
    let ev = this.#byId.get(id)
    if (ev === undefined) {
      const n = nOfFields(fields)
      ev = n === undefined ? undefined : this.#events[n]
      if (ev !== undefined) {
        ev.streamId ??= id
        this.#byId.set(id, ev)
      }
    }
    return ev
  }

  #disturb(id: string): void {
    const ev = this.#byId.get(id)
    if (ev !== undefined) ev.disturbed = true
  }

  /** Every entry delivered to `consumer` and not known settled may lose a delivery to a fault of that consumer. */
  #disturbConsumer(consumer: string): void {
    for (const ev of this.#events) if (ev.emissions.some((e) => e.inc.consumer === consumer) || ev.runs.some((r) => r.inc.consumer === consumer)) ev.disturbed = true
    this.#consumersTouched.add(consumer)
  }

  readonly #consumersTouched = new Set<string>()
  readonly #deliveredTo = new Map<string, Set<string>>()

  #delivered(_view: string, call: string, consumer: string, entries: readonly ReadEntry[], lost: boolean, request?: ReadRequest): void {
    if (entries.length === 0) return
    this.#progress()
    let set = this.#deliveredTo.get(consumer)
    if (set === undefined) this.#deliveredTo.set(consumer, (set = new Set()))
    for (const entry of entries) {
      set.add(entry.id)
      const ev = this.#event(entry.id, entry.fields)
      this.log(`store ${call}${request?.from === 'pending' ? '(pending)' : ''} ${entry.id}${ev === undefined ? '' : ` (e${ev.n})`} -> ${consumer} count ${entry.deliveryCount}${lost ? ' [reply lost]' : ''}`)
      if (ev === undefined) continue
      if (entry.fields === null) ev.deleted = true
      ev.storeCount = Math.max(ev.storeCount, entry.deliveryCount)
      ev.storeCounts.add(entry.deliveryCount)
      if (this.#consumersTouched.has(consumer) || lost) ev.disturbed = true
      // Bug 3 of #11: a re-read of the consumer's own pending entries must not take a message it still holds.
      if (call === 'read' && request?.from === 'pending') {
        for (const inc of this.#incarnations) {
          if (inc.consumer !== consumer || inc.state !== 'live') continue
          const held = ev.emissions.some((e) => e.inc === inc && e.message.outcome === undefined && !isWithdrawn(e.message))
          const running = (inc.active.get(entry.id) ?? 0) > 0
          if (held || running) this.violation(`a re-read of ${consumer}'s pending entries raised the delivery count of e${ev.n} (${entry.id}) to ${entry.deliveryCount} while it was ${running ? 'being handled' : 'held'} there`)
        }
      }
    }
  }

  #view(name: string, rates: Scenario['faultRates']): BackendView {
    return new BackendView(this.#world.processBackend(name), {
      name,
      prng: this.#prng.fork(),
      faults: this.#faults,
      rates,
      maxDelayMs: this.#world.callDelays ? this.#s.maxDelayMs : 0,
      slowMs: this.#s.slowMs,
      observer: this.#observer,
    })
  }

  #manager(backend: StreamBackend): EventManager {
    const s = this.#s.settings
    return createEventManager({
      backend,
      env: {},
      consumerTimeout: s.consumerTimeout,
      maxRetries: s.maxRetries,
      retryBackoff: s.retryBackoff,
      claimMinIdleTime: s.claimMinIdleTime,
      claimInterval: s.claimInterval,
      batchSize: s.batchSize,
      ...(s.maxPendingMessages === undefined ? {} : { maxPendingMessages: s.maxPendingMessages }),
      delayedQueueCheckInterval: 100,
      groupGauges: false,
    })
  }

  /** The most unsettled messages one subscription may hold. */
  #creditLimit(inc: Incarnation): number {
    const s = this.#s.settings
    // handleEach declares its concurrency: two read-ahead rounds of 4 reads of max(batchSize, 50) on top.
    return s.maxPendingMessages ?? inc.concurrency + 8 * Math.max(s.batchSize, 50)
  }

  // ---- consumers -------------------------------------------------------------

  #live(consumer: string): Incarnation | undefined {
    return this.#incarnations.find((i) => i.consumer === consumer && (i.state === 'live' || i.state === 'stopping'))
  }

  #previous(consumer: string): Incarnation[] {
    return this.#incarnations.filter((i) => i.consumer === consumer)
  }

  async #start(consumer: string, api: Api, concurrency: number): Promise<void> {
    if (this.#live(consumer) !== undefined) return // one incarnation of a name at a time
    // A restart waits until the previous process under this name is gone.
    await Promise.all(this.#previous(consumer).flatMap((i) => (i.closing === undefined ? [] : [i.closing])))
    if (this.#live(consumer) !== undefined) return
    const view = this.#view(`${consumer}#${this.#nextInc}`, this.#s.faultRates)
    const manager = this.#manager(view.backend)
    const inc: Incarnation = {
      id: this.#nextInc++,
      consumer,
      api,
      concurrency,
      view,
      manager,
      state: 'live',
      stoppedAt: undefined,
      rx: undefined,
      handle: undefined,
      active: new Map(),
      emitted: new Set(),
      closing: undefined,
    }
    this.#incarnations.push(inc)
    this.log(`start ${view.name} api=${api} concurrency=${concurrency}`)
    const s = this.#s.settings
    const consume = { consumer, blockMs: s.blockMs, drainTimeout: s.drainTimeout }
    const retry = s.handlerRetry === undefined ? {} : { retry: s.handlerRetry }
    const handler = (message: Message): Promise<void> => this.#handle(inc, message)
    if (api === 'subscribe') {
      inc.handle = manager.subscribe(this.#topic, GROUP, handler, { ...consume, concurrency, ...retry })
    } else {
      inc.rx = manager
        .topic(this.#topic)
        .consume({ group: GROUP, ...consume })
        .pipe(
          tap((message) => this.#emitted(inc, message)),
          handleEach(handler, { concurrency, ...retry }),
        )
        .subscribe({
          error: (error: unknown) => {
            if (inc.state === 'live') this.violation(`the pipeline of ${view.name} errored: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`)
          },
        })
    }
  }

  #emitted(inc: Incarnation, message: Message): void {
    this.#progress()
    const ev = this.#event(message.streamId, null) ?? this.#events[nOfName(message.event.name) ?? -1]
    if (ev === undefined) {
      this.violation(`${inc.view.name} emitted an unknown entry ${message.streamId}`)
      return
    }
    this.#byId.set(message.streamId, ev)
    this.log(`emit e${ev.n} (${message.streamId}) at ${inc.view.name} count ${message.deliveryCount}`)
    if (inc.state === 'crashed') return
    if (inc.stoppedAt !== undefined) this.violation(`${inc.view.name} emitted e${ev.n} after its subscription stopped`)
    // Pipeline contract: a copy that never reached a handler was given back without a delivery counted.
    const before = ev.emissions[ev.emissions.length - 1]
    // A run since that emission (e.g. through subscribe(), whose emissions are not observed) counted a delivery.
    const ranSince = before !== undefined && ev.runs.some((r) => r.start >= before.at)
    if (before !== undefined && !before.started && !ranSince && before.inc.state !== 'crashed' && !ev.disturbed && message.deliveryCount > before.deliveryCount) {
      this.violation(
        `e${ev.n} reached no handler in ${before.inc.view.name} (count ${before.deliveryCount}) but came back to ${inc.view.name} with count ${message.deliveryCount}: a give-back counted a delivery`,
      )
    }
    ev.emissions.push({ inc, at: this.#clock.now(), message, deliveryCount: message.deliveryCount, started: false })
    inc.emitted.add(message)
    this.#watchSettlement(message)
    let unsettled = 0
    for (const m of inc.emitted) {
      // A settlement whose store call failed leaves the outcome unset; it no longer counts against the credit
      // (the engine releases it when the settlement is attempted; the entry stays pending for redelivery).
      if (m.outcome !== undefined || isWithdrawn(m) || this.#settleAttempted.has(m)) inc.emitted.delete(m)
      else unsettled++
    }
    const limit = this.#creditLimit(inc)
    if (unsettled > limit) this.violation(`${inc.view.name} had ${unsettled} unsettled messages emitted, more than its credit ${limit}`)
  }

  readonly #settleAttempted = new WeakSet<Message>()

  /** Notes when ack/nack/deadLetter is first called on a message (its own methods, wrapped in place). */
  #watchSettlement(message: Message): void {
    const target = message as unknown as Record<string, unknown>
    for (const name of ['ack', 'nack', 'deadLetter'] as const) {
      const original = target[name]
      if (typeof original !== 'function') continue
      try {
        target[name] = (...args: unknown[]): unknown => {
          this.#settleAttempted.add(message)
          return (original as (...a: unknown[]) => unknown).apply(message, args)
        }
      } catch {
        // A frozen message: the outcome alone tells.
      }
    }
  }

  async #handle(inc: Incarnation, message: Message): Promise<void> {
    const n = nOfName(message.event.name)
    const ev = n === undefined ? undefined : this.#events[n]
    if (ev === undefined) throw new Error(`unknown event ${message.event.name}`)
    if (inc.view.isDead()) return new Promise<void>(() => undefined) // a dead process runs nothing
    this.#byId.set(message.streamId, ev)
    const now = this.#clock.now()
    this.#progress()
    if (inc.stoppedAt !== undefined) this.violation(`a handler of ${inc.view.name} started e${ev.n} after its close()/unsubscribe resolved`)
    const active = inc.active.get(message.streamId) ?? 0
    const earlier = active > 0 ? ev.runs.find((r) => r.inc === inc && r.end === undefined) : undefined
    if (active > 0 && (earlier === undefined || now - earlier.start < OVERLAP_AFTER_TIMEOUTS * this.#s.settings.consumerTimeout)) {
      const ran = earlier === undefined ? '?' : String(now - earlier.start)
      this.violation(`two concurrent runs of e${ev.n} (${message.streamId}) in ${inc.view.name}: the earlier run had run ${ran} ms (consumer timeout ${this.#s.settings.consumerTimeout} ms)`)
    }
    if (message.deliveryCount < 1 || message.deliveryCount > Math.max(ev.storeCount, 1)) {
      this.violation(`a handler saw e${ev.n} with delivery count ${message.deliveryCount}, the store said ${ev.storeCount}`)
    }
    inc.active.set(message.streamId, active + 1)
    const behaviour = runBehaviour(this.#s.events[ev.n]!, ev.runs.length, this.#s.settings)
    const run: Run = { inc, start: now, end: undefined, behaviourFailed: isFailure(behaviour), returned: false, deliveryCount: message.deliveryCount }
    ev.runs.push(run)
    this.#runsTotal++
    for (let i = ev.emissions.length - 1; i >= 0; i--) {
      const e = ev.emissions[i]!
      if (e.inc === inc) {
        e.started = true
        break
      }
    }
    this.log(`run e${ev.n} #${ev.runs.length} at ${inc.view.name} count ${message.deliveryCount}: ${behaviour.kind}${behaviour.kind === 'hang' && behaviour.cooperative ? ' (stops on abort)' : ''} ${behaviour.ms}ms`)
    const finish = (): void => {
      run.end = this.#clock.now()
      inc.active.set(message.streamId, (inc.active.get(message.streamId) ?? 1) - 1)
      this.#progress()
    }
    const signal = (message as { signal?: AbortSignal }).signal
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, behaviour.ms)
      if (behaviour.kind === 'hang' && behaviour.cooperative && signal !== undefined) {
        const abort = (): void => {
          clearTimeout(timer)
          reject(new Error('aborted'))
        }
        if (signal.aborted) abort()
        else signal.addEventListener('abort', abort, { once: true })
      }
    }).catch((error: unknown) => {
      finish()
      throw error
    })
    if (inc.view.isDead()) return new Promise<void>(() => undefined)
    finish()
    run.returned = behaviour.kind !== 'throw'
    switch (behaviour.kind) {
      case 'ok':
      case 'hang':
        return
      case 'ackTwice':
        await message.ack()
        await message.ack()
        return
      case 'nackSelf':
        await message.nack(new Error(`e${ev.n} nacked by its handler`))
        return
      case 'throw':
        throw new Error(`e${ev.n} failed`)
    }
  }

  #crash(consumer: string): void {
    const inc = this.#live(consumer)
    if (inc === undefined) return
    this.log(`crash ${inc.view.name}`)
    inc.view.crash()
    this.#world.crashed(inc.view.name, inc.view.inner)
    inc.state = 'crashed'
    this.#consumersTouched.add(consumer)
    for (const id of this.#deliveredTo.get(consumer) ?? []) this.#disturb(id)
    for (const ev of this.#events) if (ev.emissions.some((e) => e.inc === inc)) ev.disturbed = true
    // The process is gone: its manager is abandoned (closed in the background only to stop its timers; its view has no effect).
    inc.rx?.unsubscribe()
    inc.closing = inc.manager.close().catch(() => undefined)
  }

  async #stop(consumer: string, how: 'unsubscribe' | 'close'): Promise<void> {
    const inc = this.#live(consumer)
    if (inc?.state !== 'live') return
    inc.state = 'stopping'
    this.log(`${how} ${inc.view.name}`)
    const done = async (): Promise<void> => {
      if (how === 'close') await inc.manager.close()
      else if (inc.handle !== undefined) await inc.handle.unsubscribe()
      else {
        inc.rx?.unsubscribe()
        // An Observable unsubscribe has no promise: the manager's close waits for the stopping subscription.
        await inc.manager.close()
      }
    }
    inc.closing = done().then(
      () => {
        if (inc.state === 'stopping') {
          inc.state = 'stopped'
          inc.stoppedAt = this.#clock.now()
          this.log(`${inc.view.name} stopped`)
          // A run still going when the stop resolved outlived drainTimeout: its entry stays pending without a
          // lease (README, "Delivery guarantees"), so another consumer may claim it, as after a crash.
          for (const [id, running] of inc.active) if (running > 0) this.#disturb(id)
        }
      },
      (error: unknown) => this.violation(`${how} of ${inc.view.name} rejected: ${String(error)}`),
    )
    await inc.closing
    if (how === 'unsubscribe' && inc.api === 'subscribe') await inc.manager.close().catch(() => undefined)
  }

  async #act(action: Action): Promise<void> {
    switch (action.kind) {
      case 'publish':
        this.#publishing++
        try {
          for (const n of action.events) {
            const plan = this.#s.events[n]!
            const event = newEvent(nameOf(n), { n })
            try {
              if (plan.delayMs > 0) await this.#publisher.publishWithDelay(this.#topic, event, plan.delayMs)
              else {
                const id = await this.#publisher.publish(this.#topic, event)
                const ev = this.#events[n]!
                ev.streamId = id
                this.#byId.set(id, ev)
              }
              this.log(`published e${n}${plan.delayMs > 0 ? ` (delayed ${plan.delayMs}ms)` : ''}`)
            } catch (error) {
              this.violation(`publishing e${n} failed: ${String(error)}`)
            }
          }
        } finally {
          this.#publishing--
        }
        return
      case 'start':
        return this.#start(action.consumer, action.api, action.concurrency)
      case 'crash':
        this.#crash(action.consumer)
        return
      case 'unsubscribe':
      case 'close':
        return this.#stop(action.consumer, action.kind)
      case 'faults':
        this.#faults.on = action.on
        this.#world.faults(action.on)
        this.log(`faults ${action.on ? 'on' : 'off'}`)
        return
      case 'deleteEntries': {
        const candidates = this.#events.filter((e) => e.streamId !== undefined && !e.deleted)
        for (let i = 0; i < action.count && candidates.length > 0; i++) {
          const ev = candidates.splice(this.#prng.int(0, candidates.length - 1), 1)[0]!
          if (this.#store.deleteEntries === undefined) return
          await this.#store.deleteEntries(this.#topic, [ev.streamId!])
          ev.deleted = true
          ev.disturbed = true
          this.log(`XDEL e${ev.n} (${ev.streamId})`)
        }
        return
      }
      case 'trim': {
        if (this.#store.trim === undefined) return
        const removed = await this.#store.trim(this.#topic, action.keep)
        // Trimming removes the oldest entries: every id below the first one left.
        const first = (await this.#store.topicInfo(this.#topic)).firstId
        const marked = this.#events.filter((e) => e.streamId !== undefined && !e.deleted && (first === null || compareStreamIds(e.streamId, first) < 0))
        for (const ev of marked) {
          ev.deleted = true
          ev.disturbed = true
        }
        // Entries no one had read yet (e.g. promoted delayed events) have no known id: counted, not named.
        this.#trimmedUnseen += Math.max(0, removed - marked.length)
        this.log(`XTRIM MAXLEN ${action.keep}: ${removed} removed`)
        return
      }
      case 'destroyGroup':
        if (this.#store.destroyGroup !== undefined && (await this.#store.destroyGroup(this.#topic, GROUP))) {
          this.#groupIncarnations++
          for (const ev of this.#events) ev.disturbed = true
          this.log('XGROUP DESTROY')
        }
        return
    }
  }

  // ---- checks during the run -------------------------------------------------

  #step(): void {
    for (const inc of this.#incarnations) {
      if (inc.state !== 'live' && inc.state !== 'stopping') continue
      const subs = inc.manager.internals.subscriptions().filter((s) => s.consumer === inc.consumer)
      const limit = this.#creditLimit(inc)
      for (const status of subs) if (status.held > limit) this.violation(`${inc.view.name} held ${status.held} messages, more than its credit ${limit}`)
    }
  }

  // ---- the run ---------------------------------------------------------------

  /** The retries and first backoff of the handlers' in-process retry: handleEach's own policy, else the config's. */
  #handlerRetry(): { readonly retries: number; readonly initialDelay: number } {
    const s = this.#s.settings
    const own = s.handlerRetry === undefined || s.handlerRetry === false ? undefined : s.handlerRetry
    return { retries: Math.max(s.maxRetries, own?.maxRetries ?? 0), initialDelay: Math.max(s.retryBackoff, own?.initialDelay ?? 0) }
  }

  #settledBound(): number {
    const s = this.#s.settings
    const { retries, initialDelay } = this.#handlerRetry()
    const backoff = Math.min(60_000, initialDelay * 2 ** (retries + 1)) * 1.2
    return s.claimMinIdleTime + s.claimInterval + s.blockMs + backoff + s.consumerTimeout + 1_000 + this.#s.slowMs + this.#s.maxDelayMs * 20
  }

  /**
   * The longest one entry may take from its first delivery to its settlement without any bug: each of its
   * maxRetries + 1 deliveries runs up to (handler retries + 1) attempts, each up to the longest hang of a handler
   * that ignores its abort (2.5 x consumerTimeout, see runBehaviour; its redelivered copy waits until it returns)
   * plus a backoff, and is redelivered within {@link #settledBound}. Seed 24931 (credit 1, timeout 5 s, mostly
   * poison events) settles an entry every 26 s at most, and its 39 entries one after the other, past 20 x the bound.
   */
  #entryBound(): number {
    const s = this.#s.settings
    const { retries, initialDelay } = this.#handlerRetry()
    const attempts = s.handlerRetry === false ? 1 : retries + 1
    const backoff = Math.min(60_000, initialDelay * 2 ** attempts) * 1.2
    return (s.maxRetries + 1) * (this.#settledBound() + attempts * (2.5 * s.consumerTimeout + backoff))
  }

  async #advance(untilMs: number): Promise<void> {
    await this.#clock.runUntil(untilMs, () => {
      this.#step()
      return false
    })
  }

  async #settled(): Promise<{ done: boolean; pending: number; lag: number; scheduled: number }> {
    const groups = await this.#store.groups(this.#topic).catch(() => [])
    const g = groups.find((x) => x.name === GROUP)
    const scheduled = await this.#store.countScheduled(this.#topic)
    const pending = g?.pending ?? 0
    const lag = g === undefined ? this.#events.length : (g.lag ?? 0)
    return { done: g !== undefined && pending === 0 && lag === 0 && scheduled === 0, pending, lag, scheduled }
  }

  async run(): Promise<void> {
    const t0 = this.#clock.now()
    for (const action of this.#s.actions) {
      setTimeout(() => {
        const p = this.#act(action).catch((error: unknown) => this.violation(`action ${action.kind} failed: ${String(error)}`))
        this.#pendingActions.add(p)
        void p.finally(() => this.#pendingActions.delete(p))
      }, action.at)
    }
    await this.#advance(t0 + this.#s.chaosEndMs)
    // Faults stop; final consumers keep going until everything is settled.
    this.#faults.on = false
    this.#world.faults(false)
    const endOfChaos = this.#clock.now()
    for (const f of this.#s.finalConsumers) {
      const p = this.#start(f.consumer, f.api, f.concurrency)
      this.#pendingActions.add(p)
      void p.finally(() => this.#pendingActions.delete(p))
    }
    this.log('chaos over: faults off, final consumers started')
    const bound = this.#settledBound()
    const entryBound = this.#entryBound()
    const slice = Math.max(50, Math.floor(bound / 4))
    this.#lastProgressAt = Math.max(this.#lastProgressAt, endOfChaos)
    let state = await this.#settled()
    // Everything left may be worked through one entry after the other (credit 1, one final consumer): the budget grows
    // with what is left; progress that settles nothing is caught sooner, by the entry bound below.
    const left = state.pending + state.lag + state.scheduled + this.#events.filter((e) => e.streamId === undefined).length
    const limit = endOfChaos + (this.#world.settleLimitMs ?? Math.max(20 * bound, 120_000, left * entryBound))
    // What the store holds unsettled, and when that last went down: the store's own count, not the calls made (an ack
    // that removes nothing settles nothing).
    let unsettled = state.pending + state.lag + state.scheduled
    let lastSettledAt = endOfChaos
    while (!state.done || this.#publishing > 0) {
      if (this.#clock.now() >= limit) {
        this.violation(`not settled ${limit - endOfChaos} ms after the faults stopped: pending ${state.pending}, lag ${state.lag}, scheduled ${state.scheduled}`)
        break
      }
      if (!state.done && this.#clock.now() - lastSettledAt > entryBound) {
        this.violation(`livelock: no entry settled for ${this.#clock.now() - lastSettledAt} ms (entry bound ${Math.round(entryBound)} ms) with pending ${state.pending}, lag ${state.lag}, scheduled ${state.scheduled}`)
        break
      }
      await this.#advance(this.#clock.now() + slice)
      state = await this.#settled()
      const unsettledNow = state.pending + state.lag + state.scheduled
      if (unsettledNow < unsettled) lastSettledAt = this.#clock.now()
      unsettled = unsettledNow
      const running = this.#incarnations.some((i) => i.state !== 'crashed' && [...i.active.values()].some((v) => v > 0))
      if (running) this.#progress()
      // Only delayed messages left, none due yet: their due time is the next progress to expect (seed 194791: the
      // last one was published 459 ms before the faults stopped, delayed 2,961 ms).
      if (state.pending === 0 && state.lag === 0 && state.scheduled > 0) {
        const due = await this.#store.listScheduled(this.#topic, { count: 1_000 }).catch(() => [])
        const next = Math.min(...due.map((d) => d.dueAt))
        if (next > this.#lastProgressAt) this.#lastProgressAt = Math.min(next, this.#clock.now())
      }
      if (!state.done && this.#clock.now() - this.#lastProgressAt > bound) {
        this.violation(`stall: no progress for ${this.#clock.now() - this.#lastProgressAt} ms (bound ${Math.round(bound)} ms) with pending ${state.pending}, lag ${state.lag}, scheduled ${state.scheduled}`)
        break
      }
    }
    this.log(`settled: ${JSON.stringify(state)}`)
    // Shutdown: every live process closes.
    const closing = this.#incarnations.filter((i) => i.state === 'live').map((i) => this.#stop(i.consumer, 'close'))
    const all = Promise.all([...closing, ...this.#pendingActions])
    const shutdown = { closed: false }
    void all.then(() => (shutdown.closed = true))
    await this.#clock.runUntil(this.#clock.now() + 60_000, () => {
      this.#step()
      return shutdown.closed
    })
    if (!shutdown.closed) this.violation('close() did not resolve within 60 s (virtual)')
    // Anything that still runs after every close() resolved is a violation (checked in the handler).
    await this.#advance(this.#clock.now() + (this.#world.afterCloseMs ?? this.#settledBound()))
    await this.#publisher.close()
    await this.#finalChecks(state.done)
  }

  async #finalChecks(settled: boolean): Promise<void> {
    const letters = await this.#store.dlqList(this.#topic, { count: 10_000 })
    this.#deadLettered = letters.length
    const byOriginal = new Map<string, Record<string, string>[]>()
    for (const letter of letters) {
      const f: Record<string, string> = {}
      for (let i = 0; i + 1 < letter.fields.length; i += 2) f[letter.fields[i]!] = letter.fields[i + 1]!
      const id = f['dlq_original_id'] ?? ''
      const list = byOriginal.get(id) ?? []
      list.push(f)
      byOriginal.set(id, list)
    }
    const maxDeliveries = this.#s.settings.maxRetries + 1
    for (const ev of this.#events) {
      const label = `e${ev.n} (${ev.streamId ?? 'never seen'})`
      if (ev.streamId === undefined) {
        if (this.#trimmedUnseen > 0) this.#trimmedUnseen--
        else if (settled) this.violation(`${label} was published but never delivered`)
        continue
      }
      const dead = byOriginal.get(ev.streamId) ?? []
      if (dead.length > this.#groupIncarnations) this.violation(`${label} was dead-lettered ${dead.length} times`)
      const handlerFailed = ev.runs.some((r) => r.behaviourFailed || r.inc.state === 'crashed')
      // Acked: some run returned (a late, non-cooperative hang counts: its ack may land) — or ackTwice/ok.
      const succeeded = ev.runs.some((r) => r.returned)
      if (ev.deleted) continue
      if (dead.length === 0) {
        if (settled && !succeeded) this.violation(`${label} was acked but no handler run of it succeeded (runs: ${ev.runs.length})`)
        continue
      }
      for (const letter of dead) {
        const error = letter['dlq_error'] ?? ''
        const deliveries = Number(letter['dlq_deliveries'] ?? letter['dlq_attempts'] ?? NaN)
        const neverStarted = error.includes('never_started') || error.includes('never started')
        if (neverStarted && ev.runs.length > 0 && !ev.disturbed) this.violation(`${label} was dead-lettered as never started, but a handler ran it ${ev.runs.length} times`)
        const exhausted = ev.storeCount >= maxDeliveries && ev.disturbed
        if (!handlerFailed && !neverStarted && !exhausted) {
          this.violation(`${label} was dead-lettered ("${error.slice(0, 120)}", deliveries ${deliveries}) though no handler run of it failed (runs: ${ev.runs.length}, store count ${ev.storeCount})`)
        }
        if (Number.isFinite(deliveries) && !ev.storeCounts.has(deliveries) && !ev.disturbed) {
          this.violation(`the dead letter of ${label} says ${deliveries} deliveries; the store delivered it with counts ${[...ev.storeCounts].join(',')}`)
        }
        const runs = Number(letter['dlq_handler_runs'] ?? NaN)
        if (Number.isFinite(runs) && runs > ev.runs.length) this.violation(`the dead letter of ${label} says ${runs} handler runs; handlers ran it ${ev.runs.length} times`)
      }
    }
  }

  result(): SimResult {
    return {
      seed: this.#s.seed,
      violations: this.#violations,
      trace: this.#verbose ? this.#trace : this.#trace.slice(-200),
      fingerprint: digest(this.#trace),
      virtualMs: this.#clock.now() - this.#t0,
      timersFired: this.#clock.fired,
      handlerRuns: this.#runsTotal,
      events: this.#events.length,
      deadLettered: this.#deadLettered,
    }
  }
}

function compareStreamIds(a: string, b: string): number {
  const [am = '0', as = '0'] = a.split('-')
  const [bm = '0', bs = '0'] = b.split('-')
  const d = BigInt(am) - BigInt(bm)
  if (d !== 0n) return d < 0n ? -1 : 1
  const e = BigInt(as) - BigInt(bs)
  return e === 0n ? 0 : e < 0n ? -1 : 1
}
