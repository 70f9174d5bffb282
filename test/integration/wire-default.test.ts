/**
 * The compact layout is the default for new writes (issue 14);
 * `EVENT_WIRE_FORMAT=fields` keeps the five-field layout for a rolling
 * upgrade. A stream holding entries of both — a `fields` publisher next to
 * a default one — is drained by one consumer, dead-lettered, replayed (each
 * entry keeping its own layout) and shown by the CLI alike.
 */
import { describe, expect, it } from 'vitest'
import { runCli } from '../../src/cli/run.js'
import { newEvent, type Message } from '../../src/index.js'
import { testEvents, waitFor } from '../support/events.js'
import { newRedis, randomName, redisUrl } from '../support/redis.js'

const streamKey = (topic: string): string => `event:stream:{${topic}}`
const dlqKey = (topic: string): string => `event:dlq:{${topic}}`

/** The field names of an entry, in order. */
const names = (fields: readonly string[]): string[] => fields.filter((_, i) => i % 2 === 0)
const record = (fields: readonly string[]): Record<string, string> =>
  Object.fromEntries(fields.flatMap((v, i, a) => (i % 2 === 0 ? [[v, a[i + 1] ?? '']] : [])))

/** Runs the CLI against the test Redis with `env` added; resolves to its exit code and its stdout lines. */
async function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; lines: string[] }> {
  const out: string[] = []
  const code = await runCli(args, { out: (t) => out.push(t), err: () => undefined, env: { ...process.env, EVENT_REDIS_URL: redisUrl(), ...env } })
  return { code, lines: out.join('\n').split('\n').filter((l) => l.length > 0) }
}

describe('the default wire format', () => {
  it('is compact; a stream of fields and default entries is drained by one consumer, dead-lettered, replayed and shown by the CLI', async () => {
    const fields = testEvents({ wireFormat: 'fields', maxRetries: 0 })
    const byDefault = testEvents({ maxRetries: 0 })
    const topic = randomName('wire-default')
    const group = randomName('g')
    const redis = newRedis()
    try {
      const f1 = await fields.publish(topic, newEvent('f.ok', { n: 1 }, { headers: { h: 'f' }, correlationId: 'cf', timestamp: 11 }))
      const c1 = await byDefault.publish(topic, newEvent('c.ok', { n: 2 }, { headers: { h: 'c' }, correlationId: 'cc', timestamp: 12 }))
      const [fBad, cBad] = [await fields.publish(topic, newEvent('f.bad', 'x')), await byDefault.publish(topic, newEvent('c.bad', ['y']))]

      // What each publisher wrote: five fields (and cid), or meta + payload.
      const entries = new Map((await redis.xrange(streamKey(topic), '-', '+')).map(([id, f]) => [id, f]))
      expect(names(entries.get(f1) ?? [])).toEqual(['id', 'name', 'ts', 'headers', 'payload', 'cid'])
      expect(record(entries.get(f1) ?? [])).toMatchObject({ name: 'f.ok', ts: '11', headers: '{"h":"f"}', payload: '{"n":1}', cid: 'cf' })
      expect(names(entries.get(c1) ?? [])).toEqual(['meta', 'payload'])
      expect((JSON.parse(record(entries.get(c1) ?? [])['meta'] ?? 'null') as unknown[]).slice(1)).toEqual(['c.ok', 12, { h: 'c' }, 'cc'])
      expect(record(entries.get(c1) ?? [])['payload']).toBe('{"n":2}')
      expect(names(entries.get(fBad) ?? [])).toContain('name')
      expect(names(entries.get(cBad) ?? [])).toEqual(['meta', 'payload'])

      // One consumer (of the default manager) drains both layouts in stream order; the bad ones are dead-lettered.
      const seen: string[] = []
      const sub = byDefault
        .topic(topic)
        .consume({ group, startFrom: 'beginning' })
        .subscribe((m: Message) => {
          seen.push(`${m.event.name}:${JSON.stringify(m.event.payload)}:${m.event.correlationId ?? ''}:${m.event.headers['h'] ?? ''}:${m.event.timestamp}`)
          void (m.event.name.endsWith('.bad') ? m.deadLetter(new Error(`no ${m.event.name}`)) : m.ack())
        })
      try {
        await waitFor(async () => (await byDefault.deadLetters.count(topic)) === 2, 10_000, 'both bad events dead-lettered')
        expect(seen.slice(0, 2)).toEqual(['f.ok:{"n":1}:cf:f:11', 'c.ok:{"n":2}:cc:c:12'])
        expect(seen.slice(2).map((s) => s.split(':').slice(0, 2).join(':'))).toEqual(['f.bad:"x"', 'c.bad:["y"]'])

        // The DLQ copies each entry in its own layout, with the dlq_* fields; both decode.
        const dlq = await redis.xrange(dlqKey(topic), '-', '+')
        const byOriginal = new Map(dlq.map(([id, f]) => [record(f)['dlq_original_id'], { id, f }]))
        expect(record(byOriginal.get(fBad)?.f ?? [])).toMatchObject({ name: 'f.bad', payload: '"x"', dlq_group: group, dlq_error: 'no f.bad' })
        expect(names(byOriginal.get(cBad)?.f ?? []).slice(0, 2)).toEqual(['meta', 'payload'])
        expect(names(byOriginal.get(cBad)?.f ?? [])).not.toContain('name')
        expect(record(byOriginal.get(cBad)?.f ?? [])).toMatchObject({ payload: '["y"]', dlq_group: group, dlq_error: 'no c.bad' })
        const letters = await byDefault.deadLetters.list(topic)
        expect(letters.map((l) => [l.originalId, l.event?.name, l.event?.payload])).toEqual([
          [fBad, 'f.bad', 'x'],
          [cBad, 'c.bad', ['y']],
        ])

        // The CLI lists and shows both kinds of dead letter.
        const list = await cli(['dlq', 'list', topic, '--json'])
        expect(list.code).toBe(0)
        const listed = JSON.parse(list.lines.join('\n')) as unknown
        expect(JSON.stringify(listed)).toContain('"name":"f.bad"')
        expect(JSON.stringify(listed)).toContain('"name":"c.bad"')
        for (const [letter, name, payload] of [[byOriginal.get(fBad), 'f.bad', '"x"'], [byOriginal.get(cBad), 'c.bad', '[\n  "y"\n]']] as const) {
          const show = await cli(['dlq', 'show', topic, letter?.id ?? ''])
          expect(show.code).toBe(0)
          const text = show.lines.join('\n')
          expect(text).toMatch(new RegExp(`^event\\s+${name.replace('.', '\\.')} \\(`, 'm'))
          expect(text).toContain(`payload\n${payload}`)
          expect(text).not.toContain('malformed')
        }

        // Replay both (one through each publisher's manager): each goes back in its own layout, to the failed group.
        expect(await fields.deadLetters.replay(topic, byOriginal.get(cBad)?.id ?? '')).not.toBeNull()
        expect(await byDefault.deadLetters.replay(topic, byOriginal.get(fBad)?.id ?? '')).not.toBeNull()
        await waitFor(() => seen.length === 6, 10_000, 'both replays handled')
        expect(seen.slice(4).map((s) => s.split(':').slice(0, 2).join(':'))).toEqual(['c.bad:["y"]', 'f.bad:"x"'])
        await waitFor(async () => (await byDefault.deadLetters.count(topic)) === 2, 10_000, 'the replays dead-lettered again')
      } finally {
        sub.unsubscribe()
      }
      const after = await redis.xrange(streamKey(topic), '-', '+')
      expect(after).toHaveLength(6)
      const [replayedC, replayedF] = after.slice(4).map(([, f]) => record(f))
      expect(replayedC).toMatchObject({ payload: '["y"]', replay_group: group })
      expect(replayedC?.['name']).toBeUndefined()
      expect((JSON.parse(replayedC?.['meta'] ?? 'null') as unknown[])[1]).toBe('c.bad')
      expect(replayedF).toMatchObject({ name: 'f.bad', payload: '"x"', replay_group: group })
      expect(replayedF?.['meta']).toBeUndefined()

      // The CLI tails both layouts, the replays with their group.
      const tailed = await cli(['tail', topic, '--from', '0', '--count', '6', '--json'])
      expect(tailed.code).toBe(0)
      const rows = tailed.lines.map((l) => JSON.parse(l) as Record<string, unknown>)
      expect(rows.map((r) => [r['name'], r['payload'], r['correlationId'], r['replayGroup']])).toEqual([
        ['f.ok', { n: 1 }, 'cf', undefined],
        ['c.ok', { n: 2 }, 'cc', undefined],
        ['f.bad', 'x', undefined, undefined],
        ['c.bad', ['y'], undefined, undefined],
        ['c.bad', ['y'], undefined, group],
        ['f.bad', 'x', undefined, group],
      ])
      expect(rows.every((r) => r['malformed'] === undefined)).toBe(true)
      const text = await cli(['tail', topic, '--from', '0', '--count', '2'])
      expect(text.lines[0]).toMatch(/ f\.ok {2}\{"n":1\} {2}headers=\{"h":"f"\} {2}cid=cf$/)
      expect(text.lines[1]).toMatch(/ c\.ok {2}\{"n":2\} {2}headers=\{"h":"c"\} {2}cid=cc$/)
    } finally {
      await redis.quit()
    }
  })

  it('the CLI publishes in the configured layout: compact by default, five fields under EVENT_WIRE_FORMAT=fields', async () => {
    const topic = randomName('wire-cli')
    const redis = newRedis()
    try {
      const asDefault = await cli(['publish', topic, 'cli.default', '{"a":1}', '--json'])
      const asFields = await cli(['publish', topic, 'cli.fields', '{"b":2}', '--json'], { EVENT_WIRE_FORMAT: 'fields' })
      expect([asDefault.code, asFields.code]).toEqual([0, 0])
      const entries = await redis.xrange(streamKey(topic), '-', '+')
      expect(entries.map(([, f]) => names(f))).toEqual([
        ['meta', 'payload'],
        ['id', 'name', 'ts', 'headers', 'payload'],
      ])
      expect(record(entries[1]?.[1] ?? [])).toMatchObject({ name: 'cli.fields', payload: '{"b":2}' })
      expect((JSON.parse(record(entries[0]?.[1] ?? [])['meta'] ?? 'null') as unknown[])[1]).toBe('cli.default')
    } finally {
      await redis.quit()
    }
  })
})
