import { readFileSync } from 'node:fs'
import { Redis, type Cluster } from 'ioredis'
import { BackendError, GroupMissingError, NotMasterError, PublishOutcomeUnknownError, ReplicationTimeoutError } from '../../errors.js'
import type {
  ClaimResult,
  ConsumerInfo,
  DeadLetterInput,
  GiveBackItem,
  GroupInfo,
  GroupReader,
  IdentifiedEntry,
  OperatorStateWrite,
  PromoteResult,
  ReadEntry,
  ReadRequest,
  ScheduledEntry,
  ScheduleInput,
  StartFrom,
  StoredEntry,
  StreamBackend,
  TopicInfo,
} from '../types.js'
import { capUtf8, MAX_DLQ_STACK_BYTES } from '../types.js'
import { Fields } from '../../event.js'
import { redisKeys, type RedisKeys } from './keys.js'
import { appendThenWait, staleSentinelMaster, StaleMasterError, type AppendCommand } from './connection.js'
import { decodePackedReads, noticePackedFallback, packedReadsUnsupported, sendPackedReads } from './packed-read.js'

/** What the WAIT pipelined with an append (Cluster, see `appendThenWait`) reported: checked after the append. */
interface WaitOutcome {
  acknowledged?: number
  error?: Error
}

/** An ioredis client: standalone/Sentinel or Cluster. */
export type RedisClient = Redis | Cluster

/** What the Redis adapter is built from. */
export interface RedisBackendOptions {
  /** The shared client (autopipelined) for every non-blocking command. */
  readonly client: RedisClient
  /** Makes a dedicated connection for one reader's blocking reads. */
  readonly createBlockingClient: () => RedisClient
  /** Key prefix, `event:` by default. */
  readonly keyPrefix: string
  /** Close `client` on `close()` (true when the adapter created it). */
  readonly ownsClient: boolean
  /** Turns an ioredis error into a safe BackendError (no command args, no password). */
  readonly sanitizeError?: (error: unknown) => Error
  /** Upper bound past the BLOCK time after which a read is abandoned and its connection replaced. */
  readonly readTimeoutSlackMs?: number
  /**
   * Makes the control connection (PING for health, ROLE, WAIT): nothing
   * writes on it, so a paused write path never delays it. Default: the shared client.
   */
  readonly createControlClient?: () => RedisClient
  /**
   * Durability on demand: after each append, `WAIT count timeoutMs` on the
   * connection that wrote it (appends then go through a connection of their
   * own, made by `createWriteClient`); fewer acknowledgements reject with a
   * {@link ReplicationTimeoutError} (the entry *is* on the master).
   */
  readonly waitReplicas?: { readonly count: number; readonly timeoutMs: number }
  /** Makes the connection appends use when `waitReplicas` is set. */
  readonly createWriteClient?: () => RedisClient
  /** Where the adapter logs what an operator may want to know (packed reads unavailable); none by default. */
  readonly logger?: { info(object: object, message: string): void }
}

const SCRIPTS = {
  rrsAppend: 'append-1.lua',
  rrsAppendOnce: 'appendOnce-2.lua',
  rrsAppendOnceKeys: 'appendOnceKeys-n.lua',
  rrsRedeliver: 'redeliver-1.lua',
  rrsDeadLetter: 'deadLetter-2.lua',
  rrsReplay: 'replay-2.lua',
  rrsPromote: 'promote-4.lua',
  rrsRenewLeases: 'renewLeases-1.lua',
  rrsDeleteIdleConsumer: 'deleteIdleConsumer-1.lua',
  rrsGiveBack: 'giveBack-1.lua',
  rrsOperatorState: 'operatorState-1.lua',
} as const
type ScriptName = keyof typeof SCRIPTS

/** A script's source and key count; `-n.lua` scripts take a variable number of keys (the count is their first argument). */
const scriptSource = new Map<ScriptName, { lua: string; numberOfKeys?: number }>()
function loadScript(name: ScriptName): { lua: string; numberOfKeys?: number } {
  let script = scriptSource.get(name)
  if (script === undefined) {
    const file = SCRIPTS[name]
    const lua = readFileSync(new URL(`./lua/${file}`, import.meta.url), 'utf8')
    const keys = /-(\d+)\.lua$/.exec(file)?.[1]
    script = keys === undefined ? { lua } : { lua, numberOfKeys: Number(keys) }
    scriptSource.set(name, script)
  }
  return script
}

/** Scripts sent when called, never autopipelined (see defineScripts). */
const DIRECT_SCRIPTS: ReadonlySet<ScriptName> = new Set(['rrsAppend', 'rrsAppendOnce', 'rrsAppendOnceKeys'])

function defineScripts(client: RedisClient): void {
  for (const name of Object.keys(SCRIPTS) as ScriptName[]) {
    if (typeof (client as unknown as Record<string, unknown>)[name] !== 'function') client.defineCommand(name, loadScript(name))
  }
  // The append scripts are written to the socket when called, not queued for the autopipeline: ioredis keeps one
  // autopipeline in flight per connection (node), so queued appends would wait for the previous pipeline's replies and
  // the client and Redis would take turns; sent at once, Redis runs one coalesced call while the client builds the
  // next (see APPEND_SEND_AT_ENTRIES), and concurrent batches are all in flight, as with pipelines of XADDs. Each such
  // call already carries many entries (one write per call). XGROUP goes at once too: a group created at `$` must still
  // reach Redis before an append made right after it in the same tick (a queued command may now follow a later append).
  // ioredis files an autopipelined call under the slot of its first argument; for a `-n.lua` script that is the key
  // count, not a key, so on a Cluster the call could join a pipeline of commands for another node, which ioredis then
  // rejects unsent ("All keys in the pipeline should belong to the same slots allocation group"). Those go on their own.
  const ignored = client.options.autoPipeliningIgnoredCommands ?? []
  const direct = (Object.keys(SCRIPTS) as ScriptName[]).filter(
    (name) => (DIRECT_SCRIPTS.has(name) || (!(client instanceof Redis) && SCRIPTS[name].endsWith('-n.lua'))) && !ignored.includes(name),
  )
  const commands: string[] = [...direct, ...(ignored.includes('xgroup') ? [] : ['xgroup'])]
  if (commands.length > 0) client.options.autoPipeliningIgnoredCommands = [...ignored, ...commands]
}

type ScriptFn = (...args: (string | number)[]) => Promise<unknown>
function script(client: RedisClient, name: ScriptName): ScriptFn {
  const fn = (client as unknown as Record<string, ScriptFn>)[name]
  if (fn === undefined) throw new BackendError(`script ${name} is not defined`)
  return fn.bind(client)
}

/** Reads an XINFO-style reply (flat array in RESP2, map in RESP3) into a record. */
function toRecord(reply: unknown): Record<string, unknown> {
  if (Array.isArray(reply)) {
    const out: Record<string, unknown> = {}
    for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = reply[i + 1]
    return out
  }
  if (reply instanceof Map) return Object.fromEntries(reply) as Record<string, unknown>
  if (reply !== null && typeof reply === 'object') return reply as Record<string, unknown>
  return {}
}

function toFields(raw: unknown): string[] | null {
  if (raw === null || raw === undefined) return null
  if (Array.isArray(raw)) return raw.map(String)
  if (raw instanceof Map) return [...raw].flatMap(([k, v]) => [String(k), String(v)])
  if (typeof raw === 'object') return Object.entries(raw).flatMap(([k, v]) => [k, String(v)])
  return null
}

/** Entries of XRANGE / XREADGROUP / XAUTOCLAIM: `[[id, fields|null], ...]`. */
function parseEntries(raw: unknown): { id: string; fields: string[] | null }[] {
  if (!Array.isArray(raw)) return []
  const out: { id: string; fields: string[] | null }[] = []
  for (const item of raw) {
    if (Array.isArray(item) && item.length >= 1) out.push({ id: String(item[0]), fields: toFields(item[1]) })
  }
  return out
}

/** The entries of one stream in an XREADGROUP reply (array of [key, entries] or a map). */
function readReplyEntries(reply: unknown): { id: string; fields: string[] | null }[] {
  if (reply === null || reply === undefined) return []
  if (Array.isArray(reply)) {
    const first = reply[0] as unknown
    // RESP2 (and typed commands): [[key, entries]]; a RESP3 map through `call`: [key, entries].
    if (typeof first === 'string' || Buffer.isBuffer(first)) return parseEntries(reply[1])
    return Array.isArray(first) ? parseEntries(first[1]) : []
  }
  if (reply instanceof Map) {
    const first = reply.values().next().value as unknown
    return parseEntries(first)
  }
  if (typeof reply === 'object') return parseEntries(Object.values(reply)[0])
  return []
}

/** The field names the engine reads, as bytes and as one shared string each. */
const KNOWN_FIELD_NAMES: readonly (readonly [Buffer, string])[] = Object.values(Fields).map((name) => [Buffer.from(name), name] as const)

/** A field name read as bytes: a known one is the shared string (no allocation), others are decoded. */
function fieldName(bytes: Buffer): string {
  const length = bytes.length
  for (const [known, name] of KNOWN_FIELD_NAMES) {
    if (known.length !== length) continue
    let i = 0
    while (i < length && known[i] === bytes[i]) i++
    if (i === length) return name
  }
  return bytes.toString('utf8')
}

/** A reply value as text: `toString()` without arguments is Node's direct UTF-8 path (no encoding look-up, no bounds). */
const text = (value: unknown): string => (Buffer.isBuffer(value) ? value.toString() : String(value))

/** A reply of `callBuffer` with every Buffer decoded as UTF-8 (what `call` would have returned). */
function decodeBuffers(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return value.toString('utf8')
  if (Array.isArray(value)) return value.map(decodeBuffers)
  if (value instanceof Map) return new Map([...value].map(([k, v]) => [decodeBuffers(k), decodeBuffers(v)]))
  if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, decodeBuffers(v)]))
  return value
}

/**
 * The entries of an XREADGROUP reply read with `callBuffer`, in one pass: each
 * entry becomes its ReadEntry directly, with the known field names as shared
 * strings and the values decoded once (the hot path of consuming: `call` would
 * decode every Buffer into a copy of the reply, which is then copied again).
 * Replies of another shape (a RESP3 map) take the general path.
 */
function readBufferReplyEntries(reply: unknown, deliveryCount: number): ReadEntry[] {
  if (reply === null || reply === undefined) return []
  const first: unknown = Array.isArray(reply) ? reply[0] : undefined
  // [[key, entries]] (RESP2, RESP3 legacy mapping), or [key, entries].
  const entries: unknown = Array.isArray(first) ? first[1] : Buffer.isBuffer(first) || typeof first === 'string' ? (reply as unknown[])[1] : undefined
  if (!Array.isArray(entries)) {
    return readReplyEntries(decodeBuffers(reply)).map((e) => ({ id: e.id, fields: e.fields, deliveryCount }))
  }
  const out: ReadEntry[] = []
  for (const item of entries as unknown[]) {
    if (!Array.isArray(item) || item.length === 0) continue
    const raw: unknown = item[1]
    let fields: string[] | null
    if (Array.isArray(raw)) {
      const values = raw as unknown[]
      fields = new Array<string>(values.length)
      for (let i = 0; i < values.length; i++) {
        const value = values[i]
        fields[i] = i % 2 === 0 && Buffer.isBuffer(value) ? fieldName(value) : text(value)
      }
    } else {
      fields = toFields(decodeBuffers(raw))
    }
    out.push({ id: text(item[0]), fields, deliveryCount })
  }
  return out
}

/**
 * XREADGROUP with a reply of Buffers (`callBuffer`), decoded by
 * {@link readBufferReplyEntries}; on an autopipelined client with `call`
 * (strings), since ioredis 6's autopipelining drops the command name of
 * `callBuffer` (it puts it back for `call` only).
 */
function readGroup(client: RedisClient, args: readonly (string | number)[]): Promise<unknown> {
  return client.options.enableAutoPipelining === true ? client.call('XREADGROUP', ...args) : client.callBuffer('XREADGROUP', ...args)
}

/** An XAUTOCLAIM reply, read (see {@link parseAutoClaimReply}). */
export interface AutoClaimReply {
  /** Where the next step starts; `0-0` when the scan is complete. */
  readonly cursor: string
  /** Claimed entries that still exist. */
  readonly entries: { id: string; fields: string[] }[]
  /** Ids that were pending but whose entries are gone. */
  readonly deletedIds: string[]
  /** Redis 6.2 answers a claimed-but-deleted entry with a bare nil, without its id: how many. */
  readonly unnamedDeleted: number
}

/**
 * Reads an XAUTOCLAIM reply of any Redis version: `[cursor, entries, deletedIds]`
 * on 7.x (deleted ids are already out of the PEL), `[cursor, entries]` on 6.2,
 * where a deleted entry is `[id, nil]` or a bare nil (it stays pending, now
 * owned by the claimer).
 *
 * @throws {BackendError} when the reply is not an XAUTOCLAIM reply
 */
export function parseAutoClaimReply(reply: unknown): AutoClaimReply {
  if (!Array.isArray(reply) || reply.length < 2) throw new BackendError('unexpected XAUTOCLAIM reply')
  const items: unknown = reply[1]
  if (!Array.isArray(items)) throw new BackendError('unexpected XAUTOCLAIM reply')
  const entries: { id: string; fields: string[] }[] = []
  const deletedIds: string[] = []
  let unnamedDeleted = 0
  for (const item of items as unknown[]) {
    if (item === null || item === undefined) {
      unnamedDeleted++
      continue
    }
    if (!Array.isArray(item) || item.length === 0) continue
    const id = String(item[0])
    const fields = toFields(item[1])
    if (fields === null) deletedIds.push(id)
    else entries.push({ id, fields })
  }
  const deleted: unknown = reply[2]
  if (Array.isArray(deleted)) for (const id of deleted as unknown[]) deletedIds.push(String(id))
  return { cursor: String(reply[0] ?? '0-0'), entries, deletedIds, unnamedDeleted }
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g

/** The string with lone surrogates replaced by U+FFFD, as Redis would store them anyway (UTF-8). */
function wellFormed(text: string): string {
  return text.replace(LONE_SURROGATE, '\ufffd')
}

/** Compares two stream ids numerically. */
export function compareStreamIds(a: string, b: string): number {
  const [am = '0', as = '0'] = a.split('-')
  const [bm = '0', bs = '0'] = b.split('-')
  const d = Number(am) - Number(bm)
  return d !== 0 ? d : Number(as) - Number(bs)
}

/** Most ids per lease-renewal script call. */
const LEASE_CHUNK = 1_000

/** The event id of an entry's fields (its `id` field, or the first element of the compact `meta`), or '' when it has none. */
function eventIdOf(fields: readonly string[]): string {
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === Fields.id) return fields[i + 1] as string
    if (fields[i] === Fields.meta) {
      try {
        const id: unknown = (JSON.parse(fields[i + 1] as string) as unknown[])[0]
        return typeof id === 'string' ? id : ''
      } catch {
        return ''
      }
    }
  }
  return ''
}

/**
 * A coalesced append call is sent as soon as it holds this many entries,
 * without waiting for the end of the tick: Redis runs it while the client
 * builds the next one (the calls go straight to the socket, see
 * defineScripts), so of a burst of publishes only the last call's Redis time
 * is waited for. Also the most entries of one coalesced call (a single larger
 * call is sent as it is): a script blocks the server while it runs.
 */
export const APPEND_SEND_AT_ENTRIES = 128
/**
 * With no append of this client awaiting its reply, a coalesced call is sent
 * as soon as it holds this many entries: Redis, idle for us, runs it while the
 * client builds the rest of the tick's publishes, and their consumers get the
 * first entries sooner (ticks of 50 retry-safe publishes at 5,000/s: p50
 * latency about 0.2 ms lower). While calls are in flight the tick's publishes
 * gather up to {@link APPEND_SEND_AT_ENTRIES}: under load fewer, larger calls
 * cost less per entry (calls of 32 throughout cost a third more client CPU
 * per publish). Not with `waitReplicas`: every call is followed by a WAIT,
 * which holds the connection until the replicas answer or it times out.
 */
export const APPEND_SEND_IDLE_AT_ENTRIES = 32
/** Most values of one entry the append scripts take (`unpack` is bounded by Lua's C stack, about 8,000). */
const SCRIPT_MAX_VALUES = 7_000
/**
 * A call of this many entries or more is sent on its own, right away (after
 * the calls of the tick queued before it, to keep their order): it already
 * shares one script call, and merging large batches only delays their replies.
 */
const APPEND_ALONE_ENTRIES = 16
/** Most UTF-16 units of field values in one coalesced call (about 1 MiB of ASCII). */
const APPEND_COALESCE_MAX_CHARS = 1 << 20

/** Field counts as the strings ioredis would make of them, made once. */
const COUNT_TEXT = Array.from({ length: 32 }, (_, i) => String(i))
const countText = (n: number): string => COUNT_TEXT[n] ?? String(n)

/** Appends an entry as the append scripts take it: its number of field values, then the values. */
function pushFields(rest: string[], fields: readonly string[]): void {
  rest.push(countText(fields.length))
  for (const value of fields) rest.push(value)
}

/** Separates the values of a packed append argument (see {@link packValues}): JSON text never holds it raw. */
const PACK_SEPARATOR = '\0'

/**
 * The values an append script takes after its fixed arguments, in one
 * argument joined by {@link PACK_SEPARATOR} (the scripts split it): ioredis
 * then writes one bulk string instead of one per value (its work per
 * argument, and the socket write of a command string of thousands of pieces,
 * were about a quarter of a coalesced publish's client CPU), and Redis parses
 * one. Undefined when a value holds the separator: those go one argument each.
 */
function packValues(values: readonly string[]): string | undefined {
  for (const value of values) if (value.includes(PACK_SEPARATOR)) return undefined
  return values.join(PACK_SEPARATOR)
}

/** The fixed arguments, then the values packed in one argument (or one each, see {@link packValues}). */
function withValues(fixed: string[], values: string[]): string[] {
  const packed = packValues(values)
  if (packed === undefined) {
    for (const value of values) fixed.push(value)
  } else {
    fixed.push(packed)
  }
  return fixed
}

/** The keys an append names, per topic. */
interface TopicKeys {
  readonly stream: string
  readonly dedupe: string
  /** `<prefix>published:{topic}:`: the earlier layout's dedupe keys are this plus the event id. */
  readonly legacyPrefix: string
}

/** appendOnce calls of one tick for one topic, sent as one script call. */
interface AppendOnceBatch {
  readonly topic: string
  /** false: plain appends (append-1.lua, no dedupe keys; `windowMs` unused). */
  readonly dedupe: boolean
  readonly options: { readonly windowMs: number; readonly maxLen?: number }
  readonly callers: { readonly entries: readonly IdentifiedEntry[]; resolve(ids: string[]): void; reject(error: unknown): void }[]
  count: number
  chars: number
}

/** Field values' total length of some entries. */
function entriesChars(entries: readonly IdentifiedEntry[]): number {
  let chars = 0
  for (const entry of entries) for (const value of entry.fields) chars += value.length
  return chars
}

/** A Redis error reply (the command ran, or was refused, and Redis said so), anywhere in the cause chain. */
function isReplyError(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e.name === 'ReplyError') return true
  }
  return false
}

/** The group or its stream is gone: NOGROUP, or a blocked read unblocked because its stream was deleted. */
const isNoGroup = (error: unknown): boolean =>
  error instanceof Error && (error.message.includes('NOGROUP') || error.message.includes('UNBLOCKED') || /no such key/i.test(error.message))

/**
 * The Redis adapter of {@link StreamBackend}: ioredis, autopipelining for the
 * shared connection, a connection of its own per reader, Lua scripts for every
 * multi-step change.
 */
export class RedisBackend implements StreamBackend {
  readonly kind = 'redis'
  readonly #client: RedisClient
  readonly #options: RedisBackendOptions
  readonly #keys: RedisKeys
  readonly #readers = new Set<RedisGroupReader>()
  readonly #registered = new Set<string>()
  readonly #streamKeys = new Map<string, TopicKeys>()
  /** When this adapter was made: for one window after it, appendOnce also looks up the earlier layout's dedupe keys. */
  readonly #startedAt = Date.now()
  /** The retry-safe append keeps a key per event id (appendOnceKeys-n.lua): the ACL refused the buckets' commands. */
  #perEventKeys = false
  /** appendOnce calls of this tick not yet sent, per topic and options. */
  readonly #coalescing = new Map<string, AppendOnceBatch>()
  #flushScheduled = false
  #lastSlot: { readonly topic: string; readonly maxLen: number | undefined; readonly windowMs: number; readonly dedupe: boolean; readonly slot: string } | undefined
  /** Coalesced append calls sent and not yet answered: close() waits for them before it quits. */
  readonly #appendsInFlight = new Set<Promise<void>>()
  #control: RedisClient | undefined
  #writeClient: RedisClient | undefined
  #closed = false

  constructor(options: RedisBackendOptions) {
    this.#options = options
    this.#client = options.client
    this.#keys = redisKeys(options.keyPrefix)
    defineScripts(this.#client)
  }

  /** The key builder of this adapter. */
  get keys(): RedisKeys {
    return this.#keys
  }

  /** The shared client (for stats and tests). */
  get client(): RedisClient {
    return this.#client
  }

  #fail(error: unknown): never {
    if (error instanceof BackendError) throw error
    throw this.#options.sanitizeError ? this.#options.sanitizeError(error) : new BackendError(error instanceof Error ? error.message : String(error))
  }

  async #register(topic: string): Promise<void> {
    if (this.#registered.has(topic)) return
    await this.#client.sadd(this.#keys.topics(), topic)
    this.#registered.add(topic)
  }

  /**
   * Starts registering a topic not registered yet, alongside an append to it; undefined when it is registered. Its
   * rejection is handled here (the append may fail first): the caller awaits it, with `.catch`, once the append is in.
   */
  #registerAlongside(topic: string): Promise<void> | undefined {
    if (this.#registered.has(topic)) return undefined
    const registering = this.#register(topic)
    registering.catch(() => undefined)
    return registering
  }

  /**
   * A failed append: a Redis error reply is a plain BackendError (nothing was
   * appended); anything else (a timeout, a connection reset or lost after the
   * command was sent) leaves the outcome unknown.
   */
  #failAppend(topic: string, entries: readonly (readonly string[])[], error: unknown, retrySafe: boolean): never {
    if (error instanceof PublishOutcomeUnknownError || isReplyError(error)) this.#fail(error)
    let cause: unknown = error
    try {
      this.#fail(error)
    } catch (sanitized) {
      cause = sanitized
    }
    throw new PublishOutcomeUnknownError(topic, entries.map(eventIdOf), { cause, retrySafe })
  }

  appendOne(topic: string, fields: readonly string[], options: { readonly maxLen?: number } = {}): Promise<string> {
    if (this.#waitsInPipeline()) return this.append(topic, [fields], options).then((ids) => ids[0] as string)
    // The hot path of publishing without dedupe: coalesced with the other appends of the tick into one append-1.lua call.
    return this.#coalesce(topic, [{ eventId: '', fields }], { windowMs: 0, ...options }, false).then((ids) => ids[0] as string)
  }

  /**
   * The retry-safe append (one script): an entry whose event id was appended
   * within `windowMs` is not appended again; its first stream id comes back.
   * The ids appended are remembered in the topic's dedupe buckets (a hash per
   * window-long bucket of the server's clock, `<prefix>published:{topic}::<window>:<bucket>`,
   * see appendOnce-2.lua): each for at least the window, less than twice it.
   *
   * Calls for one topic made in the same tick are coalesced into script
   * calls of up to {@link APPEND_SEND_AT_ENTRIES} entries: each call's entries stay
   * together and in order, each caller gets its own ids, and a failure gives
   * each caller its own error (a PublishOutcomeUnknownError naming only its
   * event ids, or the Redis error reply).
   */
  appendOnce(topic: string, entries: readonly IdentifiedEntry[], options: { readonly windowMs: number; readonly maxLen?: number }): Promise<string[]> {
    return this.#coalesce(topic, entries, options, true)
  }

  /** Queues appends for the tick's script call of their topic, options and kind (see {@link appendOnce}). */
  #coalesce(topic: string, entries: readonly IdentifiedEntry[], options: { readonly windowMs: number; readonly maxLen?: number }, dedupe: boolean): Promise<string[]> {
    if (entries.length === 0) return Promise.resolve([])
    return new Promise<string[]>((resolve, reject) => {
      const bytes = entriesChars(entries)
      const slot = this.#slotOf(topic, options, dedupe)
      let batch = this.#coalescing.get(slot)
      if (entries.length >= APPEND_ALONE_ENTRIES) {
        if (batch !== undefined) {
          this.#coalescing.delete(slot)
          this.#sendAppendOnce(batch)
        }
        this.#sendAppendOnce({ topic, dedupe, options, callers: [{ entries, resolve, reject }], count: entries.length, chars: bytes })
        return
      }
      if (batch !== undefined && batch.chars + bytes > APPEND_COALESCE_MAX_CHARS) {
        this.#coalescing.delete(slot)
        this.#sendAppendOnce(batch)
        batch = undefined
      }
      if (batch === undefined) {
        batch = { topic, dedupe, options, callers: [], count: 0, chars: 0 }
        this.#coalescing.set(slot, batch)
        if (!this.#flushScheduled) {
          this.#flushScheduled = true
          process.nextTick(this.#flushAppends)
        }
      }
      batch.callers.push({ entries, resolve, reject })
      batch.count += entries.length
      batch.chars += bytes
      if (batch.count >= APPEND_SEND_AT_ENTRIES || (batch.count >= APPEND_SEND_IDLE_AT_ENTRIES && this.#appendsInFlight.size === 0 && this.#options.waitReplicas === undefined)) {
        // Full, or enough for an idle Redis: sent now (the tick's next calls start a new one), while the client goes on building.
        this.#coalescing.delete(slot)
        this.#sendAppendOnce(batch)
      }
    })
  }

  /** The coalescing slot of a call: its kind, topic and options (the last one kept: a burst of publishes is one topic). */
  #slotOf(topic: string, options: { readonly windowMs: number; readonly maxLen?: number }, dedupe: boolean): string {
    const windowMs = dedupe ? options.windowMs : 0
    const last = this.#lastSlot
    if (last !== undefined && last.topic === topic && last.maxLen === options.maxLen && last.windowMs === windowMs && last.dedupe === dedupe) return last.slot
    const slot = `${dedupe ? 'once' : 'plain'}\n${topic}\n${options.maxLen ?? ''}\n${dedupe ? windowMs : ''}`
    this.#lastSlot = { topic, maxLen: options.maxLen, windowMs, dedupe, slot }
    return slot
  }

  /** Sends every coalesced batch not yet full, at the end of the tick that queued them (written at once, see defineScripts). */
  readonly #flushAppends = (): void => {
    this.#flushScheduled = false
    const batches = [...this.#coalescing.values()]
    this.#coalescing.clear()
    for (const batch of batches) this.#sendAppendOnce(batch)
  }

  /** One script call for a coalesced batch; settles each of its callers. */
  #sendAppendOnce(batch: AppendOnceBatch): void {
    const { topic, options, callers, dedupe } = batch
    const settle = (ids: string[]): void => {
      let at = 0
      for (const caller of callers) {
        const n = caller.entries.length
        caller.resolve(callers.length === 1 ? ids : ids.slice(at, at + n))
        at += n
      }
    }
    const fail = (error: unknown, outcomeUnknown: boolean): void => {
      for (const caller of callers) {
        if (!outcomeUnknown) {
          caller.reject(error)
          continue
        }
        try {
          this.#failAppend(topic, caller.entries.map((e) => e.fields), error, dedupe)
        } catch (failure) {
          caller.reject(failure)
        }
      }
    }
    let registering: Promise<void> | undefined
    let sent: Promise<unknown>
    const waited: WaitOutcome = {}
    try {
      registering = this.#registerAlongside(topic)
      const keys = this.#topicKeys(topic)
      const maxLen = options.maxLen === undefined ? '' : String(options.maxLen)
      // The arguments after the keys, in one array: ioredis flattens it once, instead of a call spreading thousands of arguments.
      let rest: string[]
      if (dedupe && this.#perEventKeys) {
        // The ACL lacks what the buckets need (see appendOnce-2.lua): a key per event id, GET and SET … PX.
        rest = []
        for (const caller of callers) for (const entry of caller.entries) rest.push(this.#keys.published(topic, entry.eventId))
        rest.push(maxLen, String(Math.max(1, Math.ceil(options.windowMs))))
        for (const caller of callers) for (const entry of caller.entries) pushFields(rest, entry.fields)
      } else if (dedupe) {
        const windowMs = Math.max(1, Math.ceil(options.windowMs))
        // The earlier layout's keys (one per event id) may answer for a publish made before an upgrade, up to a window after it.
        const legacy = Date.now() - this.#startedAt < windowMs ? keys.legacyPrefix : ''
        const values: string[] = []
        for (const caller of callers) {
          for (const entry of caller.entries) {
            // The five-field layout starts with `id, <event id>`: the script reads it there instead of a second copy.
            values.push(entry.fields[0] === Fields.id && entry.fields[1] === entry.eventId ? '' : entry.eventId)
            pushFields(values, entry.fields)
          }
        }
        rest = withValues([maxLen, String(windowMs), legacy], values)
      } else {
        const values: string[] = []
        for (const caller of callers) for (const entry of caller.entries) pushFields(values, entry.fields)
        rest = withValues([maxLen], values)
      }
      const name = dedupe ? (this.#perEventKeys ? 'rrsAppendOnceKeys' : 'rrsAppendOnce') : 'rrsAppend'
      const keyArgs = dedupe ? (this.#perEventKeys ? [String(batch.count + 1), keys.stream] : [keys.stream, keys.dedupe]) : [keys.stream]
      if (this.#waitsInPipeline()) {
        sent = this.#appendWithWait(waited, { ...loadScript(name), args: keyArgs.concat(rest) })
      } else {
        sent = (script(this.#writer(), name) as unknown as (...args: (string | string[])[]) => Promise<unknown>)(...keyArgs, rest)
      }
    } catch (error) {
      fail(error, true)
      return
    }
    this.#trackAppend(sent)
    sent.then(
      async (reply) => {
        try {
          // The entries are in: a failed registration (the topic set, for stats and the CLI) is retried by the next publish.
          if (registering !== undefined) await registering.catch(() => undefined)
          if (reply === 'RRS_KEYS' && dedupe) {
            // Nothing ran: this user may not use the buckets. From now on a key per event id, and this batch again.
            this.#perEventKeys = true
            this.#sendAppendOnce(batch)
            return
          }
          const ids = Array.isArray(reply) ? reply.map(String) : []
          if (ids.length !== batch.count) throw new BackendError(`appendOnce returned ${ids.length} ids for ${batch.count} entries`)
          try {
            await this.#replicated(waited)
          } catch (error) {
            fail(error, false)
            return
          }
          settle(ids)
        } catch (error) {
          fail(error, true)
        }
      },
      (error: unknown) => {
        // A Redis error part-way through a coalesced call (one caller's dedupe key of another type): a script is not
        // rolled back, so the callers before it are appended. Each caller is sent again on its own: the dedupe keys
        // answer for the appended ones, and only the caller whose entries fail gets the error.
        if (dedupe && callers.length > 1 && isReplyError(error)) {
          for (const caller of callers) {
            this.#sendAppendOnce({ topic, dedupe, options, callers: [caller], count: caller.entries.length, chars: entriesChars(caller.entries) })
          }
          return
        }
        fail(error, true)
      },
    )
  }

  /** Stream keys of recently used topics, built once. */
  #streamKey(topic: string): string {
    return this.#topicKeys(topic).stream
  }

  /** The keys an append of a recently used topic names, built once. */
  #topicKeys(topic: string): TopicKeys {
    let keys = this.#streamKeys.get(topic)
    if (keys === undefined) {
      keys = { stream: this.#keys.stream(topic), dedupe: this.#keys.dedupe(topic), legacyPrefix: this.#keys.published(topic, '') }
      if (this.#streamKeys.size >= 10_000) this.#streamKeys.clear()
      this.#streamKeys.set(topic, keys)
    }
    return keys
  }

  /**
   * Appends entries in one script call, all or nothing. Like {@link appendOnce}
   * without the dedupe: a call of fewer than 16 entries shares the tick's
   * script call with the other appends of its topic, a larger one goes on its
   * own, after them, so the stream keeps the order of the calls.
   */
  append(topic: string, entries: readonly (readonly string[])[], options: { readonly maxLen?: number } = {}): Promise<string[]> {
    if (!this.#waitsInPipeline() && entries.length === 1 && (entries[0] as readonly string[]).length > SCRIPT_MAX_VALUES) {
      // More values than a script's `unpack` takes (Lua's C stack): one plain XADD (a dead letter's replay of a huge entry).
      const appended = this.#appendLarge(topic, entries[0] as readonly string[], options)
      this.#trackAppend(appended)
      return appended
    }
    if (!this.#waitsInPipeline()) return this.#coalesce(topic, entries.map((fields) => ({ eventId: '', fields })), { windowMs: 0, ...options }, false)
    const appended = this.#appendNow(topic, entries, options)
    this.#trackAppend(appended)
    return appended
  }

  /** One entry of more than {@link SCRIPT_MAX_VALUES} values, by a plain XADD (after the appends of the tick queued before it). */
  async #appendLarge(topic: string, fields: readonly string[], options: { readonly maxLen?: number }): Promise<string[]> {
    this.#flushAppends()
    const key = this.#streamKey(topic)
    try {
      const registering = this.#registerAlongside(topic)
      const writer = this.#writer()
      const id =
        options.maxLen === undefined
          ? await writer.xadd(key, '*', ...(fields as string[]))
          : await writer.xadd(key, 'MAXLEN', '~', options.maxLen, '*', ...(fields as string[]))
      if (registering !== undefined) await registering.catch(() => undefined)
      return [String(id)]
    } catch (error) {
      return this.#failAppend(topic, [fields], error, false)
    }
  }

  /** Counts an append as in flight until it is answered (see {@link close}). */
  #trackAppend(sent: Promise<unknown>): void {
    const answered = sent.then(
      () => undefined,
      () => undefined,
    )
    this.#appendsInFlight.add(answered)
    void answered.then(() => this.#appendsInFlight.delete(answered))
  }

  /** Cluster with WAIT: the batch script for any count, in one pipeline with its WAIT on the topic's node. */
  async #appendNow(topic: string, entries: readonly (readonly string[])[], options: { readonly maxLen?: number }): Promise<string[]> {
    const key = this.#streamKey(topic)
    let appended: string[]
    const waited: WaitOutcome = {}
    try {
      const registering = this.#registerAlongside(topic)
      const values: string[] = []
      for (const fields of entries) pushFields(values, fields)
      const args = withValues([key, options.maxLen === undefined ? '' : String(options.maxLen)], values)
      const ids = ((await this.#appendWithWait(waited, { ...loadScript('rrsAppend'), args })) as unknown[]).map(String)
      if (registering !== undefined) await registering.catch(() => undefined) // appended: see #sendAppendOnce
      appended = ids
    } catch (error) {
      this.#failAppend(topic, entries, error, false)
    }
    await this.#replicated(waited)
    return appended
  }


  async ensureGroup(topic: string, group: string, startFrom: StartFrom): Promise<void> {
    try {
      await this.#client.xgroup('CREATE', this.#keys.stream(topic), group, startFrom === 'beginning' ? '0' : '$', 'MKSTREAM')
    } catch (error) {
      if (!(error instanceof Error && error.message.includes('BUSYGROUP'))) this.#fail(error)
    }
    // Registered again each time: a Redis restarted without persistence has lost the registry.
    this.#registered.delete(topic)
    await this.#register(topic).catch((error: unknown) => this.#fail(error))
  }

  createReader(): GroupReader {
    const reader = new RedisGroupReader(this, this.#options, this.#keys, (e) => this.#fail(e))
    this.#readers.add(reader)
    reader.onClose = () => this.#readers.delete(reader)
    return reader
  }

  /**
   * XPENDING delivery counts of some ids owned by `consumer`. One range query
   * answers for ids that are consecutive in the consumer's pending list (a read
   * of its own pending entries); any id it misses (other pending entries of the
   * consumer lie in between, as after a claim) is asked for on its own.
   */
  async deliveryCounts(topic: string, group: string, consumer: string, ids: readonly string[]): Promise<Map<string, number>> {
    const counts = new Map<string, number>()
    if (ids.length === 0) return counts
    const key = this.#keys.stream(topic)
    let first = ids[0] as string
    let last = first
    for (const id of ids) {
      if (compareStreamIds(id, first) < 0) first = id
      if (compareStreamIds(id, last) > 0) last = id
    }
    const wanted = new Set(ids)
    const reply = await this.#client.xpending(key, group, first, last, ids.length, consumer)
    for (const row of reply) {
      if (Array.isArray(row) && wanted.has(String(row[0]))) counts.set(String(row[0]), Number(row[3]))
    }
    const missing = ids.filter((id) => !counts.has(id))
    if (missing.length > 0) {
      // Autopipelined: one round trip.
      const rows = await Promise.all(missing.map((id) => this.#client.xpending(key, group, id, id, 1)))
      for (const reply of rows) {
        const row = reply[0]
        if (Array.isArray(row)) counts.set(String(row[0]), Number(row[3]))
      }
    }
    return counts
  }

  async ack(topic: string, group: string, ids: readonly string[]): Promise<number> {
    if (ids.length === 0) return 0
    try {
      return await this.#client.xack(this.#keys.stream(topic), group, ...ids)
    } catch (error) {
      this.#fail(error)
    }
  }

  async deadLetter(topic: string, group: string, letters: readonly DeadLetterInput[], trimBeforeMs: number): Promise<string[]> {
    if (letters.length === 0) return []
    const args: (string | number)[] = [group, Date.now(), trimBeforeMs > 0 ? `${Math.floor(trimBeforeMs)}-0` : '', letters.length]
    // The entry itself is copied by the script from the stream, by id: only the letter's facts travel.
    for (const letter of letters) {
      args.push(
        letter.id,
        letter.attempts,
        letter.error,
        letter.handlerRuns === undefined ? '' : letter.handlerRuns,
        letter.errorClass ?? '',
        letter.stack === undefined ? '' : capUtf8(letter.stack, MAX_DLQ_STACK_BYTES),
        letter.consumer ?? '',
      )
    }
    try {
      const reply = (await script(this.#client, 'rrsDeadLetter')(this.#keys.stream(topic), this.#keys.dlq(topic), ...args)) as unknown[]
      return reply.map(String)
    } catch (error) {
      this.#fail(error)
    }
  }

  async redeliver(topic: string, group: string, consumer: string, ids: readonly string[]): Promise<ReadEntry[]> {
    if (ids.length === 0) return []
    try {
      // Owner-checked in one script: a message another consumer claimed meanwhile is not taken back.
      const reply = (await script(this.#client, 'rrsRedeliver')(this.#keys.stream(topic), group, consumer, ...ids)) as unknown[]
      const entries: ReadEntry[] = []
      for (const row of reply) {
        if (!Array.isArray(row)) continue
        const fields = toFields(row[2])
        if (fields !== null) entries.push({ id: String(row[0]), fields, deliveryCount: Number(row[1]) })
      }
      return entries
    } catch (error) {
      if (isNoGroup(error)) throw new GroupMissingError(topic, group)
      this.#fail(error)
    }
  }


  async renewLeases(topic: string, group: string, consumer: string, ids: readonly string[]): Promise<string[]> {
    if (ids.length === 0) return []
    try {
      // Chunks keep each script call far below Lua's unpack() limit (about 8,000 values).
      const renewed: string[] = []
      for (let i = 0; i < ids.length; i += LEASE_CHUNK) {
        const reply = (await script(this.#client, 'rrsRenewLeases')(this.#keys.stream(topic), group, consumer, ...ids.slice(i, i + LEASE_CHUNK))) as unknown[]
        for (const id of reply) renewed.push(String(id))
      }
      return renewed
    } catch (error) {
      if (isNoGroup(error)) throw new GroupMissingError(topic, group)
      this.#fail(error)
    }
  }

  async giveBack(topic: string, group: string, consumer: string, items: readonly GiveBackItem[], idleMs: number): Promise<string[]> {
    if (items.length === 0) return []
    try {
      const given: string[] = []
      for (let i = 0; i < items.length; i += LEASE_CHUNK) {
        const args: (string | number)[] = [this.#keys.stream(topic), group, consumer, Math.max(0, Math.floor(idleMs))]
        for (const item of items.slice(i, i + LEASE_CHUNK)) args.push(item.id, Math.max(0, Math.floor(item.retryCount)))
        const reply = (await script(this.#client, 'rrsGiveBack')(...args)) as unknown[]
        for (const id of reply) given.push(String(id))
      }
      return given
    } catch (error) {
      if (isNoGroup(error)) throw new GroupMissingError(topic, group)
      this.#fail(error)
    }
  }

  async claimIdle(
    topic: string,
    group: string,
    consumer: string,
    options: { readonly minIdleMs: number; readonly cursor: string; readonly count: number },
  ): Promise<ClaimResult> {
    const key = this.#keys.stream(topic)
    try {
      const reply: unknown = await this.#client.xautoclaim(key, group, consumer, Math.max(0, Math.floor(options.minIdleMs)), options.cursor, 'COUNT', options.count)
      const parsed = parseAutoClaimReply(reply)
      const deletedIds = [...parsed.deletedIds]
      if (parsed.unnamedDeleted > 0) deletedIds.push(...(await this.#findDeletedOwn(topic, group, consumer, options.cursor, parsed)))
      await this.countLost(topic, group, deletedIds.length)
      const counts = await this.deliveryCounts(topic, group, consumer, parsed.entries.map((e) => e.id))
      return {
        cursor: parsed.cursor,
        entries: parsed.entries.map((e) => ({ id: e.id, fields: e.fields, deliveryCount: counts.get(e.id) ?? 1 })),
        deletedIds,
      }
    } catch (error) {
      if (isNoGroup(error)) throw new GroupMissingError(topic, group)
      this.#fail(error)
    }
  }

  /**
   * Redis 6.2: the ids behind bare nils of an XAUTOCLAIM step. They are now
   * pending on `consumer` within the scanned range [start, cursor); those
   * whose entries no longer exist are the deleted ones.
   */
  async #findDeletedOwn(topic: string, group: string, consumer: string, start: string, step: AutoClaimReply): Promise<string[]> {
    const key = this.#keys.stream(topic)
    const end = step.cursor === '0-0' ? '+' : `(${step.cursor}`
    const live = new Set(step.entries.map((e) => e.id))
    const rows = await this.#client.xpending(key, group, start, end, 1_000, consumer)
    const candidates = rows.filter(Array.isArray).map((row) => String((row as unknown[])[0])).filter((id) => !live.has(id))
    const bodies = await Promise.all(candidates.map((id) => this.#client.xrange(key, id, id)))
    return candidates.filter((_, i) => bodies[i]?.length === 0)
  }

  /**
   * Counts pending entries of a group found without their bodies (trimmed or
   * deleted), in Redis so every process and the CLI see it. Best effort: a
   * failure to count never fails the read that found them.
   */
  async countLost(topic: string, group: string, count: number): Promise<void> {
    if (count <= 0) return
    try {
      await this.#client.hincrby(this.#keys.lost(topic), group, count)
    } catch {
      // statistics only
    }
  }

  async consumers(topic: string, group: string): Promise<ConsumerInfo[]> {
    try {
      const reply = (await this.#client.xinfo('CONSUMERS', this.#keys.stream(topic), group)) as unknown[]
      return reply.map((row) => {
        const r = toRecord(row)
        return { name: String(r['name']), pending: Number(r['pending'] ?? 0), idleMs: Number(r['idle'] ?? 0) }
      })
    } catch (error) {
      if (isNoGroup(error)) throw new GroupMissingError(topic, group)
      this.#fail(error)
    }
  }

  async deleteIdleConsumer(topic: string, group: string, consumer: string): Promise<boolean> {
    try {
      return Number(await script(this.#client, 'rrsDeleteIdleConsumer')(this.#keys.stream(topic), group, consumer)) === 1
    } catch (error) {
      if (isNoGroup(error)) return false
      this.#fail(error)
    }
  }

  async schedule(topic: string, items: readonly ScheduleInput[]): Promise<void> {
    if (items.length === 0) return
    try {
      const multi = this.#client.multi()
      const zargs: (string | number)[] = []
      const hargs: string[] = []
      for (const item of items) {
        zargs.push(item.dueAt, item.eventId)
        // Well-formed: Lua's cjson refuses the \ud800-style escapes JSON.stringify writes for lone surrogates.
        hargs.push(item.eventId, JSON.stringify(item.fields.map(wellFormed)))
      }
      multi.hset(this.#keys.delayedData(topic), ...hargs)
      multi.zadd(this.#keys.delayed(topic), ...zargs)
      const results = await multi.exec()
      for (const [err] of results ?? []) if (err) throw err
      await this.#register(topic)
    } catch (error) {
      // Keyed by event id: scheduling it again before it is due replaces it.
      this.#failAppend(topic, items.map((item) => item.fields), error, true)
    }
  }

  async cancelScheduled(topic: string, eventId: string): Promise<boolean> {
    try {
      const results = await this.#client.multi().zrem(this.#keys.delayed(topic), eventId).hdel(this.#keys.delayedData(topic), eventId).exec()
      const first = results?.[0]
      if (first?.[0]) throw first[0]
      return Number(first?.[1]) === 1
    } catch (error) {
      this.#fail(error)
    }
  }

  async promoteDue(topic: string, now: number, limit: number, options: { readonly maxLen?: number } = {}): Promise<PromoteResult> {
    try {
      const reply = (await script(this.#client, 'rrsPromote')(
        this.#keys.delayed(topic),
        this.#keys.delayedData(topic),
        this.#keys.stream(topic),
        this.#keys.dlq(topic),
        Math.floor(now),
        limit,
        options.maxLen === undefined ? '' : options.maxLen,
      )) as unknown[]
      const next = reply[1]
      return { promoted: Number(reply[0]), nextDueAt: next === null || next === undefined || next === false ? null : Number(next) }
    } catch (error) {
      this.#fail(error)
    }
  }

  async listScheduled(topic: string, options: { readonly offset?: number; readonly count: number }): Promise<ScheduledEntry[]> {
    try {
      const start = options.offset ?? 0
      const reply = (await this.#client.call('ZRANGE', this.#keys.delayed(topic), String(start), String(start + options.count - 1), 'WITHSCORES')) as unknown[]
      const members: { eventId: string; dueAt: number }[] = []
      // RESP2: [member, score, member, score, ...]; RESP3 through `call`: [[member, score], ...].
      for (let i = 0; i < reply.length; i++) {
        const item = reply[i]
        if (Array.isArray(item)) members.push({ eventId: String(item[0]), dueAt: Number(item[1]) })
        else if (i + 1 < reply.length) members.push({ eventId: String(item), dueAt: Number(reply[++i]) })
      }
      if (members.length === 0) return []
      const data = await this.#client.hmget(this.#keys.delayedData(topic), ...members.map((m) => m.eventId))
      const out: ScheduledEntry[] = []
      members.forEach((m, i) => {
        const raw = data[i]
        if (typeof raw === 'string') {
          const fields = JSON.parse(raw) as unknown
          if (Array.isArray(fields)) out.push({ ...m, fields: fields.map(String) })
        }
      })
      return out
    } catch (error) {
      this.#fail(error)
    }
  }

  async countScheduled(topic: string): Promise<number> {
    try {
      return await this.#client.zcard(this.#keys.delayed(topic))
    } catch (error) {
      this.#fail(error)
    }
  }

  async dlqList(topic: string, options: { readonly count: number; readonly after?: string }): Promise<StoredEntry[]> {
    try {
      const start = options.after === undefined ? '-' : `(${options.after}`
      const reply = await this.#client.xrange(this.#keys.dlq(topic), start, '+', 'COUNT', options.count)
      return parseEntries(reply).map((e) => ({ id: e.id, fields: e.fields ?? [] }))
    } catch (error) {
      this.#fail(error)
    }
  }

  async dlqGet(topic: string, dlqId: string): Promise<StoredEntry | null> {
    try {
      const [entry] = parseEntries(await this.#client.xrange(this.#keys.dlq(topic), dlqId, dlqId))
      return entry === undefined ? null : { id: entry.id, fields: entry.fields ?? [] }
    } catch (error) {
      this.#fail(error)
    }
  }

  async dlqCount(topic: string): Promise<number> {
    try {
      return await this.#client.xlen(this.#keys.dlq(topic))
    } catch (error) {
      this.#fail(error)
    }
  }

  async dlqReplay(topic: string, dlqId: string, options: { readonly maxLen?: number } = {}): Promise<string | null> {
    try {
      const reply = await script(this.#client, 'rrsReplay')(this.#keys.stream(topic), this.#keys.dlq(topic), dlqId, options.maxLen === undefined ? '' : options.maxLen)
      return typeof reply === 'string' || Buffer.isBuffer(reply) ? String(reply) : null
    } catch (error) {
      this.#fail(error)
    }
  }

  async dlqRemove(topic: string, dlqIds: readonly string[]): Promise<number> {
    if (dlqIds.length === 0) return 0
    try {
      return await this.#client.xdel(this.#keys.dlq(topic), ...dlqIds)
    } catch (error) {
      this.#fail(error)
    }
  }

  async dlqPurge(topic: string): Promise<number> {
    try {
      const results = await this.#client.multi().xlen(this.#keys.dlq(topic)).del(this.#keys.dlq(topic)).exec()
      const first = results?.[0]
      if (first?.[0]) throw first[0]
      return Number(first?.[1] ?? 0)
    } catch (error) {
      this.#fail(error)
    }
  }

  async dlqTrim(topic: string, minTimeMs: number): Promise<number> {
    try {
      return await this.#client.xtrim(this.#keys.dlq(topic), 'MINID', `${Math.floor(minTimeMs)}-0`)
    } catch (error) {
      this.#fail(error)
    }
  }

  async topics(): Promise<string[]> {
    try {
      return (await this.#client.smembers(this.#keys.topics())).sort()
    } catch (error) {
      this.#fail(error)
    }
  }

  async topicInfo(topic: string): Promise<TopicInfo> {
    const key = this.#keys.stream(topic)
    try {
      const [length, first, last] = await Promise.all([
        this.#client.xlen(key),
        this.#client.xrange(key, '-', '+', 'COUNT', 1),
        this.#client.xrevrange(key, '+', '-', 'COUNT', 1),
      ])
      return { length, firstId: first[0]?.[0] ?? null, lastId: last[0]?.[0] ?? null }
    } catch (error) {
      this.#fail(error)
    }
  }

  async groups(topic: string): Promise<GroupInfo[]> {
    try {
      const key = this.#keys.stream(topic)
      const exists = await this.#client.exists(key)
      if (exists === 0) return []
      const [reply, last, lost] = await Promise.all([
        this.#client.xinfo('GROUPS', key) as Promise<unknown[]>,
        this.#client.xrevrange(key, '+', '-', 'COUNT', 1),
        this.#client.hgetall(this.#keys.lost(topic)),
      ])
      const lastId = last[0]?.[0]
      return reply.map((row) => {
        const r = toRecord(row)
        const lag = r['lag']
        const name = String(r['name'])
        const lastDeliveredId = typeof r['last-delivered-id'] === 'string' ? r['last-delivered-id'] : '0-0'
        // Nothing after the last delivered id means no lag, whatever Redis' counters say (7.0 keeps a
        // wrong lag after a replica that full-synced mid-stream is promoted).
        const caughtUp = lastId === undefined || compareStreamIds(lastDeliveredId, lastId) >= 0
        return {
          name,
          consumers: Number(r['consumers'] ?? 0),
          pending: Number(r['pending'] ?? 0),
          lastDeliveredId,
          lag: caughtUp ? 0 : lag === null || lag === undefined ? null : Number(lag),
          lost: Number(lost[name] ?? 0),
        }
      })
    } catch (error) {
      this.#fail(error)
    }
  }

  /** The connection appends go through: the shared client, or the WAIT connection when `waitReplicas` is set. */
  #writer(): RedisClient {
    if (this.#options.waitReplicas === undefined || this.#options.createWriteClient === undefined) return this.#client
    if (this.#writeClient === undefined) {
      this.#writeClient = this.#options.createWriteClient()
      defineScripts(this.#writeClient)
    }
    return this.#writeClient
  }

  /**
   * WAIT on the connection that wrote (in order after its writes), or what
   * the WAIT pipelined with the append reported (`waited`, Cluster); too few
   * replicas reject.
   */
  async #replicated(waited: WaitOutcome = {}): Promise<void> {
    const wanted = this.#options.waitReplicas
    if (wanted === undefined || this.#writeClient === undefined) return
    if (waited.error !== undefined) this.#fail(waited.error)
    const acknowledged = waited.acknowledged ?? Number(await this.#writeClient.call('WAIT', wanted.count, wanted.timeoutMs))
    if (acknowledged < wanted.count) throw new ReplicationTimeoutError(wanted.count, acknowledged, wanted.timeoutMs)
  }

  /**
   * True when appends go with their WAIT in one pipeline: in a Cluster, WAIT
   * must run on the node of the topic (all its keys share one hash tag), on
   * the connection that wrote.
   */
  #waitsInPipeline(): boolean {
    return this.#options.waitReplicas !== undefined && this.#options.createWriteClient !== undefined && !(this.#writer() instanceof Redis)
  }

  /** Sends an append and its WAIT (see `appendThenWait`); the count goes to `waited`, checked by {@link #replicated} after. */
  async #appendWithWait(waited: WaitOutcome, append: AppendCommand): Promise<unknown> {
    const wanted = this.#options.waitReplicas ?? { count: 0, timeoutMs: 0 }
    const sent = await appendThenWait(this.#writer(), append, wanted.count, wanted.timeoutMs)
    waited.acknowledged = sent.acknowledged
    if (sent.waitError !== undefined) waited.error = sent.waitError
    return sent.reply
  }

  /** The control connection (made on first use), or the shared client when none is configured. */
  get control(): RedisClient {
    if (this.#options.createControlClient === undefined) return this.#client
    this.#control ??= this.#options.createControlClient()
    return this.#control
  }

  async ping(): Promise<number> {
    const started = performance.now()
    try {
      const control = this.control
      await control.ping()
      if (control instanceof Redis) {
        // A node that is no longer a master (a failover not followed yet, a replica given as the address) is not healthy.
        const role = (await control.call('ROLE')) as unknown[]
        const name = String(role[0])
        if (name !== 'master') {
          const options = control.options
          throw new NotMasterError(options.sentinels ? `the master of ${String(options.name)}` : `${String(options.host)}:${String(options.port)}`, name)
        }
        // Sentinel: a node that still acts as master after another was promoted (a dead branch) is not healthy either.
        const stale = await staleSentinelMaster([control, this.#client])
        if (stale !== undefined) throw new StaleMasterError(stale)
      }
    } catch (error) {
      this.#fail(error)
    }
    return performance.now() - started
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    // Appends coalesced in this tick are sent now, and every append sent is answered before the QUIT below
    // (each is bounded by the command timeout): a publish accepted before close() is appended, not cut.
    this.#flushAppends()
    await Promise.all([...this.#appendsInFlight])
    await Promise.all([...this.#readers].map((r) => r.close()))
    this.#control?.disconnect()
    this.#writeClient?.disconnect()
    if (this.#options.ownsClient) {
      try {
        await this.#client.quit()
      } catch {
        this.#client.disconnect()
      }
    }
  }

  async operatorStateRead(topic: string, group: string, operator: string, part: string, fields: readonly string[]): Promise<(string | null)[]> {
    if (fields.length === 0) return []
    try {
      return await this.#client.hmget(this.#keys.operatorState(topic, group, operator, part), ...fields)
    } catch (error) {
      this.#fail(error)
    }
  }

  async operatorStateWrite(topic: string, group: string, operator: string, part: string, write: OperatorStateWrite): Promise<(string | null)[]> {
    const max = write.max ?? []
    const deleted = write.delete ?? []
    const args: (string | number)[] = [Math.ceil(write.expireAt), write.set.length, max.length, deleted.length]
    for (const [field, value] of write.set) args.push(field, value)
    for (const [field, value] of max) args.push(field, String(value))
    args.push(...deleted)
    try {
      const reply = (await script(this.#client, 'rrsOperatorState')(this.#keys.operatorState(topic, group, operator, part), ...args)) as unknown[]
      return write.set.map((_, i) => {
        const previous = reply[i]
        return typeof previous === 'string' ? previous : null
      })
    } catch (error) {
      this.#fail(error)
    }
  }
}

/** `call`, or a BackendError naming the topic when it has not answered within `limitMs` (the timer cleared either way). */
async function withinReadLimit<T>(call: Promise<T>, topic: string, limitMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      call,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new BackendError(`read of ${topic} did not answer within ${limitMs} ms`)), limitMs)
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** A reader on a connection of its own. A read that outlives BLOCK by far is abandoned and its connection replaced. */
class RedisGroupReader implements GroupReader {
  onClose: (() => void) | undefined
  readonly #backend: RedisBackend
  readonly #options: RedisBackendOptions
  readonly #keys: RedisKeys
  readonly #fail: (error: unknown) => never
  #client: RedisClient | undefined
  #closed = false
  /** Read-ahead rounds go as one packed script call (packed-read.ts) until the server refuses it (then XREADGROUP for good). */
  #packed = true
  /**
   * Read-ahead rounds that do not block (packed, or sent with `blockMs` 0) not yet returned: Redis has run them, so
   * close() waits for them (each bounded by its own time limit) before it drops the connection, and the engine gives
   * back what they return.
   */
  readonly #packedCalls = new Set<Promise<unknown>>()
  #closing: Promise<void> | undefined

  constructor(backend: RedisBackend, options: RedisBackendOptions, keys: RedisKeys, fail: (error: unknown) => never) {
    this.#backend = backend
    this.#options = options
    this.#keys = keys
    this.#fail = fail
  }

  #connection(): RedisClient {
    this.#client ??= this.#options.createBlockingClient()
    return this.#client
  }

  #drop(): void {
    const client = this.#client
    this.#client = undefined
    client?.disconnect()
  }

  async read(topic: string, group: string, consumer: string, request: ReadRequest): Promise<ReadEntry[]> {
    if (this.#closed) return []
    const key = this.#keys.stream(topic)
    const pending = request.from === 'pending'
    const args: (string | number)[] = ['GROUP', group, consumer, 'COUNT', request.count]
    if (!pending && request.blockMs > 0) args.push('BLOCK', request.blockMs)
    args.push('STREAMS', key, pending ? (request.after ?? '0') : '>')
    const client = pending ? this.#backend.client : this.#connection()
    const limitMs = (pending ? 0 : request.blockMs) + (this.#options.readTimeoutSlackMs ?? 10_000)
    try {
      const reply = await withinReadLimit(readGroup(client, args), topic, limitMs)
      const entries = readBufferReplyEntries(reply, 1)
      if (!pending) return entries
      const counts = await this.#backend.deliveryCounts(topic, group, consumer, entries.map((e) => e.id))
      await this.#backend.countLost(topic, group, entries.filter((e) => e.fields === null).length)
      return entries.map((e) => ({ id: e.id, fields: e.fields, deliveryCount: counts.get(e.id) ?? 1 }))
    } catch (error) {
      if (this.#isClosed()) return []
      if (isNoGroup(error)) throw new GroupMissingError(topic, group)
      if (!pending) this.#drop()
      this.#fail(error)
    }
  }

  /**
   * Read-ahead: the XREADGROUP `>` commands are sent back to back on the
   * blocking reader's connection without waiting for replies (pipelined: one
   * round trip), only the first with BLOCK. Redis runs them in order on the
   * connection, so ids ascend across the replies. Each is sent like `read`'s
   * (its errors translated, a cut connection rejecting it, never re-sent); any
   * failing fails the whole call.
   */
  readMany(topic: string, group: string, consumer: string, counts: readonly number[], blockMs: number): Promise<ReadEntry[][]> {
    const call = this.#readMany(topic, group, consumer, counts, blockMs)
    if ((this.#packed || blockMs <= 0) && !this.#closed) {
      // The caller's own promise is the one close() waits for: the caller sees the entries (and gives them back) first.
      this.#packedCalls.add(call)
      void call.then(
        () => this.#packedCalls.delete(call),
        () => this.#packedCalls.delete(call),
      )
    }
    return call
  }

  async #readMany(topic: string, group: string, consumer: string, counts: readonly number[], blockMs: number): Promise<ReadEntry[][]> {
    if (this.#closed) return counts.map(() => [])
    if (this.#packed) {
      const packed = await this.#readPacked(topic, group, consumer, counts, blockMs)
      if (packed !== undefined) return packed
      // Refused (nothing ran): a reader closed meanwhile does not start a blocking read.
      if (this.#isClosed()) return counts.map(() => [])
    }
    const key = this.#keys.stream(topic)
    const client = this.#connection()
    const limitMs = blockMs + (this.#options.readTimeoutSlackMs ?? 10_000)
    try {
      const replies = await withinReadLimit(
        Promise.all(
          counts.map((count, i) => {
            const args: (string | number)[] = ['GROUP', group, consumer, 'COUNT', count]
            if (i === 0 && blockMs > 0) args.push('BLOCK', blockMs)
            args.push('STREAMS', key, '>')
            return readGroup(client, args)
          }),
        ),
        topic,
        limitMs,
      )
      return replies.map((reply) => readBufferReplyEntries(reply, 1))
    } catch (error) {
      if (this.#isClosed()) return counts.map(() => [])
      if (isNoGroup(error)) throw new GroupMissingError(topic, group)
      this.#drop()
      this.#fail(error)
    }
  }

  /**
   * A read-ahead round as one script call that does not block (the engine
   * asks for a round only after a full read; a round that finds nothing
   * returns empty reads, and the engine's next read blocks): the reads one
   * after the other in Redis, each read's entries in one msgpack string (see
   * packed-read.ts). It fails like `readMany`. Undefined when this reader
   * cannot use it (no script permission, no cmsgpack: nothing ran), and from
   * then on it reads with XREADGROUP.
   */
  async #readPacked(topic: string, group: string, consumer: string, counts: readonly number[], blockMs: number): Promise<ReadEntry[][] | undefined> {
    const client = this.#connection()
    // Bounded as the pipelined round it replaces (a large round takes its time to arrive, BLOCK or not).
    const limitMs = blockMs + (this.#options.readTimeoutSlackMs ?? 10_000)
    try {
      const reply = await withinReadLimit(sendPackedReads(client, this.#keys.stream(topic), group, consumer, counts), topic, limitMs)
      return decodePackedReads(reply, counts)
    } catch (error) {
      if (this.#isClosed()) return counts.map(() => [])
      if (packedReadsUnsupported(error)) {
        this.#packed = false
        noticePackedFallback(this.#options.logger, error)
        return undefined
      }
      if (isNoGroup(error)) throw new GroupMissingError(topic, group)
      this.#drop()
      this.#fail(error)
    }
  }

  /** A method, not a property read, so that the check after an await is not narrowed away. */
  #isClosed(): boolean {
    return this.#closed
  }

  close(): Promise<void> {
    if (this.#closed) return this.#closing ?? Promise.resolve()
    this.#closed = true
    this.#closing = this.#close()
    return this.#closing
  }

  async #close(): Promise<void> {
    // A packed round in flight has run in Redis: its reply is awaited, not cut (a cut one strands its entries,
    // pending to this consumer with a delivery counted). Its own time limit bounds the wait; a connection that is
    // not up has no reply to wait for (and a cut one rejects the round).
    while (this.#packedCalls.size > 0 && this.#client?.status === 'ready') await Promise.allSettled([...this.#packedCalls])
    this.#drop()
    this.onClose?.()
  }
}
