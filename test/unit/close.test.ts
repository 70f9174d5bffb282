import { describe, expect, it } from 'vitest'
import { handleEach } from '../../operators/index.js'
import { createEventManager, newEvent } from '../../src/index.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

describe('closing the event manager (memory backend)', () => {
  for (const how of ['events.subscribe', 'consume().pipe(handleEach)'] as const) {
    it(`starts no queued handler once close() began, and none after it resolved (${how})`, async () => {
      const events = createEventManager({ backend: 'memory', env: {} })
      const topic = 'close-test'
      await events.publishBatch(topic, Array.from({ length: 20 }, (_, i) => newEvent('n', i)))
      const started: number[] = []
      const handler = async (): Promise<void> => {
        started.push(Date.now())
        await sleep(100)
      }
      if (how === 'events.subscribe') events.subscribe(topic, 'g', handler, { concurrency: 1, drainTimeout: 300 })
      else events.topic(topic).consume({ group: 'g', drainTimeout: 300 }).pipe(handleEach(handler, { concurrency: 1 })).subscribe()
      while (started.length === 0) await sleep(5)
      const closing = Date.now()
      await events.close()
      const closed = Date.now()
      await sleep(400)
      expect(started.filter((t) => t > closing)).toHaveLength(0)
      expect(started.filter((t) => t > closed)).toHaveLength(0)
      expect(closed - closing).toBeLessThan(1_000)
    })
  }
})
