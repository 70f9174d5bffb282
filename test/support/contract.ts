/**
 * What the end-to-end tests of the consumer contract share: the two backends,
 * test-sized timeouts, and a bulk publisher.
 */
import type { Message } from '../../src/consumer/message.js'
import type { EventManager, EventManagerOptions } from '../../src/index.js'
import { newEvent } from '../../src/index.js'
import { createTestEventManager } from '../../src/testing.js'
import { testEvents } from './events.js'

export const BACKENDS = ['memory', 'redis'] as const
export type BackendKind = (typeof BACKENDS)[number]

/** Test-sized timeouts: a queued or dropped message would be punished within a second. */
export const FAST: EventManagerOptions = { consumerTimeout: 300, retryBackoff: 10, claimMinIdleTime: 100, claimInterval: 50, delayedQueueCheckInterval: 50 }

/** A manager on the memory backend or on the test Redis, with {@link FAST} timeouts under `options`. */
export function managerOn(kind: BackendKind, options: EventManagerOptions = {}): EventManager {
  return kind === 'memory' ? createTestEventManager({ ...FAST, ...options }) : testEvents({ ...FAST, ...options })
}

/** Publishes `count` events named `job` with payload `{ n }`, in batches of 500; returns their stream ids. */
export async function publishMany(events: EventManager, topic: string, count: number): Promise<string[]> {
  const ids: string[] = []
  for (let i = 0; i < count; i += 500) {
    ids.push(...(await events.publishBatch(topic, Array.from({ length: Math.min(500, count - i) }, (_, j) => newEvent('job', { n: i + j })))))
  }
  return ids
}

export const payloadN = (m: Message): number => (m.event.payload as { n: number }).n
