import { describe, expect, it } from 'vitest'
import { ClosedError, createEventManager, newEvent } from '../../src/index.js'

describe('a closed manager', () => {
  it('rejects publishing calls with ClosedError instead of throwing synchronously', async () => {
    const events = createEventManager({ backend: 'memory' })
    await events.close()
    const topic = `closed-${Math.random().toString(36).slice(2)}`
    const calls: (() => Promise<unknown>)[] = [
      () => events.publish(topic, newEvent('x', {})),
      () => events.publishBatch(topic, [newEvent('x', {})]),
      () => events.publishWithDelay(topic, newEvent('x', {}), 1_000),
      () => events.publishAt(topic, newEvent('x', {}), Date.now() + 1_000),
    ]
    for (const call of calls) {
      let result: Promise<unknown> | undefined
      expect(() => (result = call())).not.toThrow()
      await expect(result).rejects.toBeInstanceOf(ClosedError)
    }
  })
})
