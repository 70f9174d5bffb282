/**
 * The engine hands window and join operators their state store (issue 12,
 * item 8): every delivered message, and every view of it (`withPayload`),
 * carries the subscription's backend as `operatorStateStore`, without the
 * pipeline attaching anything.
 */
import { firstValueFrom } from 'rxjs'
import { describe, expect, it } from 'vitest'
import { newEvent } from '../../src/index.js'
import { operatorStateOf } from '../../src/shared-settlement.js'
import { randomName } from '../support/redis.js'
import { testEvents } from '../support/events.js'

describe('the operator state store on delivered messages', () => {
  it('a consumed message and its decoded view both carry the subscription backend', async () => {
    const events = testEvents()
    const topic = randomName('wiring-store')
    await events.publish(topic, newEvent('a', { n: 1 }))
    const message = await firstValueFrom(events.topic(topic).consume({ group: randomName('g'), drainTimeout: 50 }))
    expect(operatorStateOf(message)).toBe(events.backend)
    const view = message.withPayload({ decoded: true })
    expect(operatorStateOf(view)).toBe(events.backend)
    expect(operatorStateOf(view.withPayload(2))).toBe(events.backend)
    await view.ack()
  })
})
