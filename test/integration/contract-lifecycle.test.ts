/**
 * Issue #10, the table row "take(1), first(), firstValueFrom as receive one",
 * which rests on the engine's lifecycle. Memory backend and Redis.
 */
import { firstValueFrom } from 'rxjs'
import { afterEach, describe, expect, it } from 'vitest'
import { closeTestEventManagers } from '../../src/testing.js'
import { sleep, waitFor } from '../support/events.js'
import { randomName } from '../support/redis.js'
import { BACKENDS, managerOn, payloadN, publishMany } from '../support/contract.js'

afterEach(closeTestEventManagers)

describe.each(BACKENDS)('the consumer contract on the %s backend', (kind) => {
  it('take(1), first(), firstValueFrom as "receive one": the rest of the batch is given back at once, the one taken keeps its lease while in work, close() does not wait for the drain timeout', async () => {
    // The work (over 600 ms, 3 x claimMinIdleTime) stays within the attempt bound (consumerTimeout 5 s): after the
    // unsubscribe, a message emitted before it and begun keeps its lease until settled or that bound passes.
    const events = managerOn(kind, { claimMinIdleTime: 200, consumerTimeout: 5_000 })
    const topic = randomName('row5')
    const group = randomName('g')
    await publishMany(events, topic, 10)
    const one = await firstValueFrom(events.topic(topic).consume({ group, batchSize: 10, drainTimeout: 30_000 }))
    expect(one.begin()).toBe(true)
    const others = new Map<number, number>()
    const other = events
      .topic(topic)
      .consume({ group })
      .subscribe((m) => {
        others.set(payloadN(m), m.deliveryCount)
        void m.ack()
      })
    await waitFor(() => others.size >= 9, 10_000, 'the 9 unseen messages to reach another consumer')
    // Long work on the one taken: well past claimMinIdleTime, it is not handed to anyone else.
    await sleep(600)
    expect(others.has(payloadN(one))).toBe(false)
    expect(await one.ack()).toBe('acked')
    other.unsubscribe()
    expect([...others.values()].every((count) => count === 1)).toBe(true)
    const closing = events.close().then(() => 'closed' as const)
    expect(await Promise.race([closing, sleep(10_000).then(() => 'still draining' as const)])).toBe('closed')
  })

  it('firstValueFrom + work longer than consumerTimeout: holdUntil(Infinity) keeps the lease after the unsubscribe, and ack() acks', async () => {
    // consumerTimeout 300 ms (FAST): the work below takes longer; the README's recipe for long work holds the timeout.
    const events = managerOn(kind, { claimMinIdleTime: 200 })
    const topic = randomName('row5-long')
    const group = randomName('g')
    await publishMany(events, topic, 3)
    const one = await firstValueFrom(events.topic(topic).consume({ group, batchSize: 10, drainTimeout: 30_000 }))
    expect(one.begin()).toBe(true)
    one.holdUntil(Number.POSITIVE_INFINITY)
    const others = new Set<number>()
    const other = events
      .topic(topic)
      .consume({ group })
      .subscribe((m) => {
        others.add(payloadN(m))
        void m.ack()
      })
    await waitFor(() => others.size >= 2, 10_000, 'the 2 unseen messages to reach another consumer')
    await sleep(900)
    expect(others.has(payloadN(one))).toBe(false)
    expect(one.signal.aborted).toBe(false)
    expect(await one.ack()).toBe('acked')
    other.unsubscribe()
  })

})

