/**
 * Fault: the group or the whole stream vanishes while consumers are blocked
 * in a read (XGROUP DESTROY, DEL), and the bodies of 100 pending entries are
 * trimmed away (XTRIM). Nothing may crash or spin: the errors logged per
 * second are counted from a pino logger; pending entries go back to 0.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Subscription as RxSubscription } from 'rxjs'
import { handleEach } from '../../operators/index.js'
import { createEventManager, newEvent, type Message } from '../../src/index.js'
import { startRedisServer, type RedisServer } from '../support/redis-server.js'
import { newRedis, randomName } from '../support/redis.js'
import { sleep, waitFor } from '../support/events.js'
import { countingLogger, maxPerSecond, pendingByConsumer, streamKey } from './helpers.js'

/** Far above what a backoff produces, far below a hot loop. */
const MAX_LOG_LINES_PER_SECOND = 30

let server: RedisServer

beforeAll(async () => {
  server = await startRedisServer()
})

afterAll(async () => {
  await server.stop()
})

describe('NOGROUP', () => {
  it('XGROUP DESTROY and DEL under blocked consumers: the group is recreated with backoff, no hot loop', async () => {
    const topic = randomName('nogroup')
    const group = randomName('g')
    const { logger, lines } = countingLogger()
    const events = createEventManager({ redisUrl: server.url, env: {}, logger })
    const redis = newRedis(server.url)
    const subs: RxSubscription[] = []
    try {
      const handled = new Set<number>()
      for (let c = 0; c < 3; c++) {
        subs.push(
          events
            .topic(topic)
            .consume({ group, consumer: `c${c}`, blockMs: 500, claimInterval: 200, claimMinIdleTime: 500 })
            .pipe(handleEach((m) => void handled.add(m.event.payload as number)))
            .subscribe(),
        )
      }
      let n = 0
      const publish = async (count: number): Promise<number[]> => {
        const batch = Array.from({ length: count }, () => n++)
        await events.publishBatch(topic, batch.map((i) => newEvent('n', i)))
        return batch
      }
      const first = await publish(50)
      await waitFor(() => first.every((i) => handled.has(i)), 10_000, 'the first events')
      await sleep(200) // every consumer is blocked in XREADGROUP now

      const chaosFrom = Date.now()
      await redis.xgroup('DESTROY', streamKey(topic), group)
      await sleep(1_000)
      const second = await publish(50)
      await waitFor(() => second.every((i) => handled.has(i)), 10_000, 'events after XGROUP DESTROY')

      await redis.del(streamKey(topic))
      await sleep(1_000)
      const third = await publish(50)
      await waitFor(() => third.every((i) => handled.has(i)), 10_000, 'events after DEL')
      const chaosTo = Date.now()
      await waitFor(async () => (await pendingByConsumer(redis, streamKey(topic), group)).total === 0, 5_000, 'nothing pending')

      const logged = lines.filter((l) => l.time >= chaosFrom && l.time <= chaosTo)
      const perSecond = maxPerSecond(logged.map((l) => l.time))
      const errorsPerSecond = (logged.length / ((chaosTo - chaosFrom) / 1_000)).toFixed(1)
      console.log(`[nogroup] ${logged.length} warn/error lines over ${chaosTo - chaosFrom} ms (${errorsPerSecond}/s on average, at most ${perSecond} in any second)`)
      expect(perSecond).toBeLessThanOrEqual(MAX_LOG_LINES_PER_SECOND)
      expect(logged.some((l) => /read failed/.test(l.msg))).toBe(true) // the failure was seen and logged
    } finally {
      subs.forEach((s) => s.unsubscribe())
      await events.close()
      await redis.quit()
    }
  })
})

describe('nil entries', () => {
  it('XTRIM under 100 pending entries: held, re-read after a restart, and claimed ones all end acked as lost', async () => {
    const topic = randomName('trimmed')
    const key = streamKey(topic)
    const { logger, lines } = countingLogger()
    const events = createEventManager({ redisUrl: server.url, env: {}, logger })
    const redis = newRedis(server.url)
    const subs: RxSubscription[] = []
    try {
      await events.publishBatch(topic, Array.from({ length: 100 }, (_, i) => newEvent('n', i)))
      // Group "held": 100 messages held by a live consumer when their bodies vanish.
      const heldGroup = randomName('held')
      const held: Message[] = []
      subs.push(events.topic(topic).consume({ group: heldGroup, maxPendingMessages: 100, batchSize: 100, consumerTimeout: 60_000 }).subscribe((m) => held.push(m)))
      await waitFor(() => held.length === 100, 5_000, '100 held')
      // Groups "restart" and "claim": 100 entries pending on a consumer that died.
      const restartGroup = randomName('restart')
      const claimGroup = randomName('claim')
      for (const group of [restartGroup, claimGroup]) {
        await redis.xgroup('CREATE', key, group, '0')
        await redis.xreadgroup('GROUP', group, 'ghost', 'COUNT', 100, 'STREAMS', key, '>')
      }

      const chaosFrom = Date.now()
      expect(await redis.xtrim(key, 'MAXLEN', 0)).toBe(100)
      // The live consumer settles its messages: half acked, half nacked (redelivery finds no body).
      held.forEach((m, i) => void (i % 2 === 0 ? m.ack() : m.nack(new Error('again'), { delay: 10 })))
      // The dead consumer comes back under its name: its re-read returns nil entries.
      subs.push(events.topic(topic).consume({ group: restartGroup, consumer: 'ghost', claimInterval: 0 }).subscribe(() => expect.fail('no body to deliver')))
      // Another consumer claims the dead one's entries: XAUTOCLAIM reports them deleted.
      subs.push(
        events.topic(topic).consume({ group: claimGroup, consumer: 'claimer', claimMinIdleTime: 100, claimInterval: 100 }).subscribe(() => expect.fail('no body to deliver')),
      )
      for (const group of [heldGroup, restartGroup, claimGroup]) {
        await waitFor(async () => (await pendingByConsumer(redis, key, group)).total === 0, 5_000, `nothing pending in ${group}`)
      }
      const chaosTo = Date.now()
      const logged = lines.filter((l) => l.time >= chaosFrom && l.time <= chaosTo)
      console.log(`[nil entries] pending 300 -> 0 in ${chaosTo - chaosFrom} ms; ${logged.length} warn/error lines, at most ${maxPerSecond(logged.map((l) => l.time))} in any second`)
      expect(logged.some((l) => /lost/.test(l.msg))).toBe(true)
      expect(await events.deadLetters.count(topic)).toBe(0)
    } finally {
      subs.forEach((s) => s.unsubscribe())
      await events.close()
      await redis.quit()
    }
  })
})
