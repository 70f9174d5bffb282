/**
 * The compact wire format (issue 14): `EVENT_WIRE_FORMAT=compact` writes two
 * fields per entry (`meta` + `payload`); every reader reads both layouts, so a
 * stream holding entries of both is consumed, dead-lettered, replayed (only by
 * the group that failed), delayed and tailed by the CLI alike.
 */
import { describe, expect, it } from 'vitest'
import { runCli } from '../../src/cli/run.js'
import { newEvent, type EventManager, type Message } from '../../src/index.js'
import { testEvents, waitFor } from '../support/events.js'
import { newRedis, randomName, redisUrl } from '../support/redis.js'

const streamKey = (topic: string): string => `event:stream:{${topic}}`

/** Consumes `group` into `seen` (name:payload:correlation id); events named `bad` are dead-lettered once. */
function collect(events: EventManager, topic: string, group: string, seen: string[]): { unsubscribe(): void } {
  return events
    .topic(topic)
    .consume({ group, startFrom: 'beginning' })
    .subscribe((m: Message) => {
      seen.push(`${m.event.name}:${JSON.stringify(m.event.payload)}:${m.event.correlationId ?? ''}:${m.event.headers['h'] ?? ''}`)
      void (m.event.name === 'bad' ? m.deadLetter(new Error('no')) : m.ack())
    })
}

describe('the compact wire format', () => {
  it('writes meta + payload; a stream of both layouts is consumed, dead-lettered and replayed alike', async () => {
    const compact = testEvents({ wireFormat: 'compact', maxRetries: 0 })
    const classic = testEvents({ wireFormat: 'fields', maxRetries: 0 })
    const topic = randomName('wire')
    const group = randomName('g')
    const other = randomName('other')
    const redis = newRedis()
    try {
      const first = await compact.publish(topic, newEvent('a', { n: 1 }, { headers: { h: 'x' }, correlationId: 'c1', timestamp: 42 }))
      await classic.publish(topic, newEvent('b', { n: 2 }))
      await compact.publishBatch(topic, [newEvent('bad', 3), newEvent('c', [1, 2])])
      const [entry] = await redis.xrange(streamKey(topic), first, first)
      const fields = entry?.[1] ?? []
      expect(fields[0]).toBe('meta')
      expect(fields[2]).toBe('payload')
      expect(fields).toHaveLength(4)
      const meta = JSON.parse(fields[1] ?? '') as unknown[]
      expect(meta.slice(1)).toEqual(['a', 42, { h: 'x' }, 'c1'])
      expect(fields[3]).toBe('{"n":1}')

      const seen: string[] = []
      const seenOther: string[] = []
      const sub = collect(compact, topic, group, seen)
      const subOther = collect(classic, topic, other, seenOther)
      await waitFor(async () => (await compact.deadLetters.count(topic)) === 2, 10_000, 'both groups dead-letter "bad"')
      await waitFor(() => seen.length === 4 && seenOther.length === 4, 10_000, 'four events per group')
      expect(seen).toEqual(['a:{"n":1}:c1:x', 'b:{"n":2}::', 'bad:3::', 'c:[1,2]::'])
      expect(seenOther).toEqual(seen)

      const letters = await compact.deadLetters.list(topic)
      const mine = letters.find((l) => l.group === group)
      expect(mine?.event).toMatchObject({ name: 'bad', payload: 3 })
      expect(await compact.deadLetters.replay(topic, mine?.dlqId ?? '')).not.toBeNull()
      await waitFor(() => seen.length === 5, 10_000, 'the replay reaches the failed group')
      expect(seen[4]).toBe('bad:3::')
      expect(seenOther).toHaveLength(4) // replay_group: only the failed group handles it
      sub.unsubscribe()
      subOther.unsubscribe()
    } finally {
      await redis.quit()
      await compact.close()
      await classic.close()
    }
  })

  it('a delayed compact event is promoted and read; the CLI tails compact entries', async () => {
    const events = testEvents({ wireFormat: 'compact', delayedQueueCheckInterval: 50 })
    const topic = randomName('wire-delayed')
    const group = randomName('g')
    try {
      const seen: string[] = []
      const sub = collect(events, topic, group, seen)
      await events.publishWithDelay(topic, newEvent('later', { d: 1 }), 100)
      await waitFor(() => seen.length === 1, 10_000, 'the delayed event')
      expect(seen).toEqual(['later:{"d":1}::'])
      sub.unsubscribe()
      const out: string[] = []
      const code = await runCli(['tail', topic, '--from', '0', '--count', '1', '--json'], {
        out: (t) => out.push(t),
        err: () => undefined,
        env: { ...process.env, EVENT_REDIS_URL: redisUrl() },
      })
      expect(code).toBe(0)
      expect(JSON.parse(out.join('').trim().split('\n')[0] ?? '')).toMatchObject({ name: 'later', payload: { d: 1 } })
    } finally {
      await events.close()
    }
  })
})
