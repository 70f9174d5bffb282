/**
 * The CLI's commands, each against one connection: stats, topics, health,
 * tail, publish, dlq and delayed.
 */
import { createBlockingClient, createRedisClient, type RedisClient } from '../backend/redis/connection.js'
import { redisKeys, type RedisKeys } from '../backend/redis/keys.js'
import { loadConfig, type Config } from '../config/index.js'
import type { DeadLetter } from '../dead-letter.js'
import { decodeEntry, newEvent, safeJsonParse, type Event } from '../event.js'
import { createEventManager, type EventManager } from '../manager.js'
import { reasonText } from '../settle.js'
import { collectStats } from '../stats.js'
import { validateTopic } from '../topic.js'
import { requireStreamId, UsageError, type ParsedArgs } from './args.js'
import { CLEAR_SCREEN, humanDuration, isoTime, json, table, truncate, type CliIo } from './output.js'

/** Redis did not answer: exit code 3. */
export class UnreachableError extends Error {
  override readonly name = 'UnreachableError'
}

/** A dead letter or delayed event that does not exist: exit code 4. */
export class MissingError extends Error {
  override readonly name = 'MissingError'
}

/** What every command works with. */
export interface Connection {
  readonly config: Config
  readonly client: RedisClient
  readonly keys: RedisKeys
  readonly events: EventManager
  close(): Promise<void>
}

/** Where Redis is, for messages: never the password. */
function where(config: Config): string {
  const hosts = config.redis.hosts.map((h) => `${h.host}:${String(h.port)}`).join(',')
  const mode = config.redis.mode === 'standalone' ? '' : ` (${config.redis.mode})`
  return `${config.redis.tls ? 'rediss' : 'redis'}://${hosts}/${String(config.redis.db)}${mode}`
}

/**
 * Connects to the Redis of the `EVENT_*` environment and checks it answers
 * PING within `timeoutMs`.
 *
 * @throws {UnreachableError} when it does not
 * @throws {ConfigError} for an invalid environment
 */
export async function connect(io: CliIo, timeoutMs: number): Promise<Connection> {
  const config = loadConfig({}, io.env)
  if (config.redis.mode === 'memory') throw new UsageError('EVENT_REDIS_URL=memory:// selects the in-memory backend; the CLI needs a Redis')
  let connectionFailed: ((error: Error) => void) | undefined
  const client = createRedisClient(config, { name: 'rx-redis-streams-cli', onError: (error) => connectionFailed?.(error) })
  let timer: NodeJS.Timeout | undefined
  try {
    const ping = client.ping()
    ping.catch(() => undefined)
    await Promise.race([
      ping,
      // A command line fails fast: the first connection error (refused, unknown host, TLS) is the answer.
      new Promise<never>((_, reject) => (connectionFailed = reject)),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${humanDuration(timeoutMs)}`)), timeoutMs)
      }),
    ])
  } catch (error) {
    client.disconnect()
    throw new UnreachableError(`cannot reach Redis at ${where(config)}: ${reasonText(error)}`)
  } finally {
    connectionFailed = undefined
    clearTimeout(timer)
  }
  const events = createEventManager({ env: io.env, redisClient: client, groupGauges: false, delayedQueueEnabled: false })
  return {
    config,
    client,
    keys: redisKeys(config.keyPrefix),
    events,
    close: async () => {
      await events.close()
      client.disconnect()
    },
  }
}

/**
 * A valid topic that the registry knows.
 *
 * @throws {InvalidTopicError} for a name that cannot be a topic (exit 2)
 * @throws {MissingError} for a topic nothing was published to (exit 4)
 */
async function knownTopic(conn: Connection, topic: string): Promise<string> {
  validateTopic(topic)
  if ((await conn.client.sismember(conn.keys.topics(), topic)) === 0) {
    throw new MissingError(`unknown topic ${JSON.stringify(topic)}: nothing was ever published to it (see "rx-redis-streams topics")`)
  }
  return topic
}

/** Until Ctrl-C (SIGINT) or SIGTERM: `stopped()`, and `sleep(ms)` that wakes at once on a stop. */
function untilInterrupted(onStop: () => void = () => undefined): { stopped: () => boolean; sleep: (ms: number) => Promise<void>; dispose: () => void } {
  let stopRequested = false
  let wake: (() => void) | undefined
  const stop = (): void => {
    stopRequested = true
    onStop()
    wake?.()
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  return {
    // A function, not the variable: the signal handler changes it while a read is awaited.
    stopped: () => stopRequested,
    sleep: (ms) =>
      new Promise<void>((resolve) => {
        if (stopRequested) return resolve()
        const timer = setTimeout(done, ms)
        function done(): void {
          clearTimeout(timer)
          wake = undefined
          resolve()
        }
        wake = done
      }),
    dispose: () => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
    },
  }
}

/** An event as JSON: the payload parsed when it is JSON, else its raw text. */
function eventJson(event: Event): Record<string, unknown> {
  let payload: unknown
  try {
    payload = event.payload
  } catch {
    payload = (event as { rawPayload?: string }).rawPayload ?? null
  }
  const out: Record<string, unknown> = { id: event.id, name: event.name, timestamp: event.timestamp, headers: { ...event.headers }, payload }
  if (event.correlationId !== undefined) out['correlationId'] = event.correlationId
  const traceparent = (event as { traceparent?: string }).traceparent
  if (traceparent !== undefined) out['traceparent'] = traceparent
  return out
}

/** `JSON.stringify`, typed honestly: undefined for `undefined`, functions and symbols. */
const stringifyJson: (value: unknown) => string | undefined = JSON.stringify

function payloadText(event: Event): string {
  const raw = (event as { rawPayload?: string }).rawPayload
  if (raw !== undefined) return raw
  try {
    return stringifyJson(event.payload) ?? 'null'
  } catch {
    return '?'
  }
}

function letterJson(letter: DeadLetter): Record<string, unknown> {
  return {
    dlqId: letter.dlqId,
    topic: letter.topic,
    originalId: letter.originalId,
    group: letter.group,
    error: letter.error,
    attempts: letter.attempts,
    failedAt: letter.failedAt,
    event: letter.event === null ? null : eventJson(letter.event),
    fields: { ...letter.fields },
  }
}

function arg(parsed: ParsedArgs, index: number): string {
  return parsed.args[index] ?? ''
}

// ---- stats, topics, health --------------------------------------------------

/** How often `stats --watch` refreshes by default. */
const WATCH_INTERVAL_MS = 2_000

async function stats(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const topic = parsed.args[0] === undefined ? undefined : await knownTopic(conn, parsed.args[0])
  if (!parsed.watch) {
    await printStats(conn, topic, parsed, io)
    return 0
  }
  const intervalMs = parsed.intervalMs ?? WATCH_INTERVAL_MS
  const inPlace = io.isTTY === true && io.control !== undefined && !parsed.json
  const run = untilInterrupted()
  try {
    for (let frame = 1; !run.stopped(); frame++) {
      // On a terminal each refresh replaces the last; piped, frames follow one another under a time line.
      if (inPlace) io.control?.(CLEAR_SCREEN)
      if (!parsed.json) io.out(`${inPlace ? '' : frame > 1 ? '\n' : ''}${isoTime(Date.now())}  every ${humanDuration(intervalMs)}${inPlace ? ' (Ctrl-C to stop)' : ''}\n`)
      await printStats(conn, topic, parsed, io)
      if (parsed.count !== undefined && frame >= parsed.count) break
      await run.sleep(intervalMs)
    }
  } finally {
    run.dispose()
  }
  return 0
}

async function printStats(conn: Connection, topic: string | undefined, parsed: ParsedArgs, io: CliIo): Promise<void> {
  const result = await collectStats(conn.events.backend, { topic })
  if (parsed.json) {
    io.out(json(result, parsed.watch)) // one line per refresh with --watch
    return
  }
  const topics = Object.values(result.topics)
  if (topics.length === 0) {
    io.out('no topics yet')
    return
  }
  io.out(
    table(
      ['TOPIC', 'LENGTH', 'FIRST ID', 'LAST ID', 'DELAYED', 'DEAD LETTERS', 'GROUPS'],
      topics.map((t) => [t.name, String(t.length), t.firstId ?? '-', t.lastId ?? '-', String(t.delayed), String(t.deadLetters), String(Object.keys(t.groups).length)]),
    ),
  )
  const groups = topics.flatMap((t) => Object.values(t.groups))
  if (groups.length > 0) {
    io.out('')
    io.out(
      table(
        ['TOPIC', 'GROUP', 'PENDING', 'LAG', 'CONSUMERS', 'LAST DELIVERED'],
        groups.map((g) => [g.topic, g.name, String(g.pending), g.lag === null ? '?' : String(g.lag), String(g.consumers.length), g.lastDeliveredId]),
      ),
    )
    const consumers = groups.flatMap((g) => g.consumers.map((c) => [g.topic, g.name, c.name, String(c.pending), humanDuration(c.idleMs)]))
    if (consumers.length > 0) {
      io.out('')
      io.out(table(['TOPIC', 'GROUP', 'CONSUMER', 'PENDING', 'IDLE'], consumers))
    }
  }
}

async function topics(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const names = await conn.events.backend.topics()
  if (parsed.json) io.out(json(names))
  else io.out(names.length === 0 ? 'no topics yet' : names.join('\n'))
  return 0
}

async function health(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const report = await conn.events.health({ timeoutMs: parsed.timeoutMs })
  if (parsed.json) io.out(json(report))
  else if (report.ok) io.out(`ok: Redis at ${where(conn.config)} answered PING in ${String(report.redis.latencyMs)} ms`)
  else io.out(`not ok: ${report.reasons.join('; ')}`)
  return report.ok ? 0 : 1
}

// ---- tail -------------------------------------------------------------------

function toEntries(entries: unknown): { id: string; fields: string[] }[] {
  if (!Array.isArray(entries)) return []
  const out: { id: string; fields: string[] }[] = []
  for (const entry of entries as unknown[]) {
    if (Array.isArray(entry) && entry.length >= 2 && Array.isArray(entry[1])) {
      out.push({ id: String(entry[0]), fields: (entry[1] as unknown[]).map(String) })
    }
  }
  return out
}

/** The entries of an XREAD reply of one stream: `[[key, entries]]` (RESP2), or `[key, entries]` / a map (RESP3). */
function xreadEntries(reply: unknown): { id: string; fields: string[] }[] {
  if (reply instanceof Map) return [...reply.values()].flatMap(toEntries)
  if (!Array.isArray(reply)) return []
  const items = reply as unknown[]
  if (typeof items[0] === 'string' || Buffer.isBuffer(items[0])) return toEntries(items[1])
  return items.flatMap((stream) => (Array.isArray(stream) ? toEntries(stream[1]) : []))
}

async function lastEntryId(client: RedisClient, key: string): Promise<string> {
  const [last] = await client.xrevrange(key, '+', '-', 'COUNT', 1)
  return last?.[0] ?? '0-0'
}

function printEntry(conn: Connection, parsed: ParsedArgs, io: CliIo, entry: { id: string; fields: string[] }): void {
  let decoded
  try {
    decoded = decodeEntry(entry.fields, conn.config.maxPayloadBytes, conn.config.maxPayloadDepth)
  } catch (error) {
    const fields = Object.fromEntries(entry.fields.flatMap((v, i, a) => (i % 2 === 0 ? [[v, a[i + 1] ?? '']] : [])))
    if (parsed.json) io.out(json({ streamId: entry.id, malformed: reasonText(error), fields }, true))
    else io.out(`${entry.id}  (not an event: ${reasonText(error)})  ${JSON.stringify(fields)}`)
    return
  }
  const { event, replayGroup } = decoded
  if (parsed.json) {
    io.out(json({ streamId: entry.id, ...eventJson(event), ...(replayGroup === undefined ? {} : { replayGroup }) }, true))
    return
  }
  const extras = [
    Object.keys(event.headers).length > 0 ? `headers=${JSON.stringify(event.headers)}` : '',
    event.correlationId === undefined ? '' : `cid=${event.correlationId}`,
    replayGroup === undefined ? '' : `replay-for=${replayGroup}`,
  ].filter((x) => x.length > 0)
  io.out([entry.id, isoTime(event.timestamp), event.name, event.rawPayload, ...extras].join('  '))
}

async function tail(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const topic = arg(parsed, 0)
  validateTopic(topic)
  const key = conn.keys.stream(topic)
  const reader = createBlockingClient(conn.config, { name: 'rx-redis-streams-cli-tail' })
  let stopRequested = false
  // A function, not the variable: the signal handler changes it while a read is awaited.
  const stopped = (): boolean => stopRequested
  const stop = (): void => {
    stopRequested = true
    reader.disconnect()
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  try {
    let lastId = parsed.from === undefined || parsed.from === '$' ? await lastEntryId(conn.client, key) : parsed.from
    io.err(`tailing ${topic} after ${lastId}${parsed.count === undefined ? '' : ` until ${String(parsed.count)} event(s)`} (Ctrl-C to stop)`)
    let seen = 0
    while (!stopped() && (parsed.count === undefined || seen < parsed.count)) {
      const want = parsed.count === undefined ? 100 : Math.min(100, parsed.count - seen)
      let reply: unknown
      try {
        reply = await reader.xread('COUNT', want, 'BLOCK', 1_000, 'STREAMS', key, lastId)
      } catch (error) {
        if (stopped()) break
        throw error
      }
      for (const entry of xreadEntries(reply)) {
        lastId = entry.id
        printEntry(conn, parsed, io, entry)
        seen++
      }
    }
    return 0
  } finally {
    process.off('SIGINT', stop)
    process.off('SIGTERM', stop)
    reader.disconnect()
  }
}

// ---- publish ----------------------------------------------------------------

async function publish(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const [topic = '', name = '', text = ''] = parsed.args
  validateTopic(topic)
  if (name.length === 0) throw new UsageError('<name> must not be empty')
  let payload: unknown
  try {
    payload = safeJsonParse(text)
  } catch (error) {
    throw new UsageError(`<json> is not valid JSON: ${reasonText(error)} (quote it: '{"userId":123}')`)
  }
  const event = newEvent(name, payload, { headers: { ...parsed.headers }, ...(parsed.correlationId === undefined ? {} : { correlationId: parsed.correlationId }) })
  const dueAt = parsed.at ?? (parsed.delayMs === undefined ? undefined : Date.now() + parsed.delayMs)
  if (dueAt !== undefined) {
    await conn.events.publishAt(topic, event, dueAt)
    if (parsed.json) io.out(json({ topic, eventId: event.id, dueAt }))
    else io.out(`scheduled ${event.id} on ${topic} for ${isoTime(dueAt)} (in ${humanDuration(dueAt - Date.now())})`)
    // The CLI exits now: nothing of it stays behind to move the event to the topic when it is due.
    io.err(
      `note: a delayed event reaches ${topic} only when a promoter runs at its due time: any consumer of ${topic} ` +
        `(with EVENT_DELAYED_QUEUE_ENABLED=true, the default) or "rx-redis-streams delayed promote ${topic} --watch"`,
    )
    return 0
  }
  const streamId = await conn.events.publish(topic, event)
  if (parsed.json) io.out(json({ topic, eventId: event.id, streamId }))
  else io.out(`published ${event.id} to ${topic} as ${streamId}`)
  return 0
}

// ---- dlq ----------------------------------------------------------------------

async function dlqList(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const topic = await knownTopic(conn, arg(parsed, 0))
  const dlq = conn.events.deadLetters
  const [page, total] = await Promise.all([
    dlq.list(topic, { count: parsed.count ?? 20, ...(parsed.after === undefined ? {} : { after: parsed.after }) }),
    dlq.count(topic),
  ])
  const letters = parsed.group === undefined ? page : page.filter((l) => l.group === parsed.group)
  if (parsed.json) {
    io.out(json({ topic, total, deadLetters: letters.map(letterJson) }))
    return 0
  }
  if (total === 0) {
    io.out(`no dead letters in ${topic}`)
    return 0
  }
  io.out(
    table(
      ['DLQ ID', 'GROUP', 'ATTEMPTS', 'FAILED AT', 'EVENT', 'ERROR'],
      letters.map((l) => [l.dlqId, l.group, String(l.attempts), isoTime(l.failedAt), l.event?.name ?? '(malformed)', truncate(l.error, 80)]),
    ),
  )
  const last = page[page.length - 1]
  const more = last !== undefined && page.length === (parsed.count ?? 20) ? ` (next page: --after ${last.dlqId})` : ''
  io.out(`\n${String(letters.length)} shown of ${String(total)} dead letter(s) in ${topic}${more}`)
  return 0
}

async function dlqShow(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const id = requireStreamId('<id>', arg(parsed, 1))
  const topic = await knownTopic(conn, arg(parsed, 0))
  const letter = await conn.events.deadLetters.get(topic, id)
  if (letter === null) throw new MissingError(`no dead letter ${id} in ${topic}`)
  if (parsed.json) {
    io.out(json(letterJson(letter)))
    return 0
  }
  const rows: [string, string][] = [
    ['dead letter', letter.dlqId],
    ['topic', topic],
    ['group', letter.group],
    ['original id', letter.originalId],
    ['attempts', String(letter.attempts)],
    ['failed at', isoTime(letter.failedAt)],
    ['error', letter.error],
  ]
  if (letter.event !== null) {
    rows.push(['event', `${letter.event.name} (${letter.event.id})`], ['time', isoTime(letter.event.timestamp)])
    if (Object.keys(letter.event.headers).length > 0) rows.push(['headers', JSON.stringify(letter.event.headers)])
    if (letter.event.correlationId !== undefined) rows.push(['correlation id', letter.event.correlationId])
  } else {
    rows.push(['event', '(malformed: the original fields are below)'])
  }
  const width = Math.max(...rows.map(([k]) => k.length))
  io.out(rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n'))
  if (letter.event !== null) {
    let pretty = payloadText(letter.event)
    try {
      pretty = JSON.stringify(letter.event.payload, null, 2)
    } catch {
      // not JSON: shown raw
    }
    io.out(`payload\n${pretty}`)
  } else {
    io.out(`fields\n${json(letter.fields)}`)
  }
  return 0
}

async function dlqReplay(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const id = requireStreamId('<id>', arg(parsed, 1))
  const topic = await knownTopic(conn, arg(parsed, 0))
  const letter = await conn.events.deadLetters.get(topic, id)
  const streamId = letter === null ? null : await conn.events.deadLetters.replay(topic, id)
  if (letter === null || streamId === null) throw new MissingError(`no dead letter ${id} in ${topic}`)
  if (parsed.json) io.out(json({ topic, dlqId: id, streamId, group: letter.group }))
  else io.out(`replayed ${id} to ${topic} as ${streamId} (for group ${letter.group})`)
  return 0
}

async function dlqReplayAll(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const topic = await knownTopic(conn, arg(parsed, 0))
  const dlq = conn.events.deadLetters
  const total = await dlq.count(topic)
  const scope = parsed.group === undefined ? '' : ` of group ${parsed.group}`
  io.err(`replaying the dead letters${scope} of ${topic} (${String(total)} in the queue)`)
  const replayed = await dlq.replayAll(topic, {
    ...(parsed.group === undefined ? {} : { group: parsed.group }),
    onProgress: (n) => io.err(`  replayed ${String(n)}…`),
  })
  if (parsed.json) io.out(json({ topic, replayed }))
  else io.out(`replayed ${String(replayed)} dead letter(s)${scope} to ${topic}`)
  return 0
}

async function dlqRemove(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const ids = parsed.args.slice(1).map((id) => requireStreamId('<id>', id))
  const topic = await knownTopic(conn, arg(parsed, 0))
  const removed = await conn.events.deadLetters.remove(topic, ...ids)
  if (parsed.json) io.out(json({ topic, removed, requested: ids.length }))
  else io.out(`removed ${String(removed)} of ${String(ids.length)} dead letter(s) from ${topic}`)
  if (removed === 0) throw new MissingError(`none of ${ids.join(', ')} is a dead letter of ${topic}`)
  return 0
}

/** Above this many, purge deletes page by page (never blocking Redis long) and shows progress. */
const PURGE_IN_PAGES_ABOVE = 1_000
const PURGE_PAGE = 500

async function dlqPurge(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const topic = await knownTopic(conn, arg(parsed, 0))
  const dlq = conn.events.deadLetters
  const total = await dlq.count(topic)
  if (total > 0 && !parsed.yes) throw new UsageError(`dlq purge deletes all ${String(total)} dead letter(s) of ${topic}: add --yes to confirm`)
  let purged = 0
  if (total > 0) {
    io.err(`purging ${String(total)} dead letter(s) of ${topic}`)
    if (total > PURGE_IN_PAGES_ABOVE) {
      for (;;) {
        const page = await dlq.list(topic, { count: PURGE_PAGE })
        if (page.length === 0) break
        purged += await dlq.remove(topic, ...page.map((l) => l.dlqId))
        io.err(`  purged ${String(purged)}/${String(total)}`)
      }
    }
    purged += await dlq.purge(topic)
  }
  if (parsed.json) io.out(json({ topic, purged }))
  else io.out(`purged ${String(purged)} dead letter(s) of ${topic}`)
  return 0
}

// ---- delayed ------------------------------------------------------------------

async function delayedList(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const topic = await knownTopic(conn, arg(parsed, 0))
  const backend = conn.events.backend
  const [entries, total] = await Promise.all([
    backend.listScheduled(topic, { count: parsed.count ?? 20, ...(parsed.offset === undefined ? {} : { offset: parsed.offset }) }),
    backend.countScheduled(topic),
  ])
  const now = Date.now()
  const rows = entries.map((e) => {
    let event: Event | null
    try {
      event = decodeEntry(e.fields, conn.config.maxPayloadBytes, conn.config.maxPayloadDepth).event
    } catch {
      event = null
    }
    return { eventId: e.eventId, dueAt: e.dueAt, event }
  })
  if (parsed.json) {
    io.out(json({ topic, total, delayed: rows.map((r) => ({ eventId: r.eventId, dueAt: r.dueAt, event: r.event === null ? null : eventJson(r.event) })) }))
    return 0
  }
  if (total === 0) {
    io.out(`no delayed events in ${topic}`)
    return 0
  }
  io.out(
    table(
      ['EVENT ID', 'DUE AT', 'DUE IN', 'NAME', 'PAYLOAD'],
      rows.map((r) => [r.eventId, isoTime(r.dueAt), humanDuration(r.dueAt - now), r.event?.name ?? '(malformed)', r.event === null ? '' : truncate(payloadText(r.event), 60)]),
    ),
  )
  io.out(`\n${String(rows.length)} shown of ${String(total)} delayed event(s) in ${topic}`)
  return 0
}

async function delayedCancel(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const topic = await knownTopic(conn, arg(parsed, 0))
  const eventId = arg(parsed, 1)
  const cancelled = await conn.events.cancelDelayed(topic, eventId)
  if (!cancelled) throw new MissingError(`no delayed event ${eventId} waiting in ${topic}`)
  if (parsed.json) io.out(json({ topic, eventId, cancelled }))
  else io.out(`cancelled ${eventId} on ${topic}`)
  return 0
}

/** Events promoted per script call (the promoter's batch). */
const PROMOTE_BATCH = 100

/** Moves what is due in `topic` now; how many moved, how many still wait and when the next is due. */
async function promoteTopic(conn: Connection, topic: string): Promise<{ promoted: number; waiting: number; nextDueAt: number | null }> {
  const options = conn.config.streamMaxLen === undefined ? {} : { maxLen: conn.config.streamMaxLen }
  let promoted = 0
  let result
  do {
    result = await conn.events.backend.promoteDue(topic, Date.now(), PROMOTE_BATCH, options)
    promoted += result.promoted
  } while (result.promoted === PROMOTE_BATCH)
  return { promoted, waiting: await conn.events.backend.countScheduled(topic), nextDueAt: result.nextDueAt }
}

async function delayedPromote(conn: Connection, parsed: ParsedArgs, io: CliIo): Promise<number> {
  const named = parsed.args[0]
  const topicsToPromote = async (): Promise<readonly string[]> => (named === undefined ? conn.events.backend.topics() : [named])
  if (named !== undefined) await knownTopic(conn, named)
  const once = async (): Promise<{ total: number; nextDueAt: number | null }> => {
    const results: Record<string, { promoted: number; waiting: number; nextDueAt: number | null }> = {}
    for (const topic of await topicsToPromote()) results[topic] = await promoteTopic(conn, topic)
    const rows = Object.entries(results)
    const total = rows.reduce((n, [, r]) => n + r.promoted, 0)
    const dues = rows.map(([, r]) => r.nextDueAt).filter((d): d is number => d !== null)
    const nextDueAt = dues.length === 0 ? null : Math.min(...dues)
    if (parsed.json) io.out(json({ promoted: total, topics: results }, parsed.watch))
    else if (!parsed.watch || total > 0) {
      for (const [topic, r] of rows) {
        if (r.promoted > 0 || !parsed.watch) {
          const next = r.nextDueAt === null ? '' : `, next due ${isoTime(r.nextDueAt)}`
          io.out(`${parsed.watch ? `${isoTime(Date.now())}  ` : ''}promoted ${String(r.promoted)} due event(s) to ${topic}; ${String(r.waiting)} waiting${next}`)
        }
      }
      if (rows.length === 0) io.out('no topics yet')
    }
    return { total, nextDueAt }
  }
  if (!parsed.watch) {
    await once()
    return 0
  }
  const intervalMs = parsed.intervalMs ?? conn.config.delayedQueueCheckIntervalMs
  io.err(`promoting due delayed events of ${named ?? 'every topic'} (checked at least every ${humanDuration(intervalMs)}; Ctrl-C to stop)`)
  const run = untilInterrupted()
  try {
    while (!run.stopped()) {
      const { nextDueAt } = await once()
      // Sleeps until the earliest due time, at most the interval (events scheduled meanwhile are found then).
      await run.sleep(nextDueAt === null ? intervalMs : Math.min(intervalMs, Math.max(0, nextDueAt - Date.now())))
    }
  } finally {
    run.dispose()
  }
  return 0
}

/** Every command by its words. */
export const COMMAND_HANDLERS: Readonly<Record<string, (conn: Connection, parsed: ParsedArgs, io: CliIo) => Promise<number>>> = {
  stats,
  topics,
  health,
  tail,
  publish,
  'dlq list': dlqList,
  'dlq show': dlqShow,
  'dlq replay': dlqReplay,
  'dlq replay-all': dlqReplayAll,
  'dlq remove': dlqRemove,
  'dlq purge': dlqPurge,
  'delayed list': delayedList,
  'delayed cancel': delayedCancel,
  'delayed promote': delayedPromote,
}
