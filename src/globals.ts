/**
 * The original spec's global accessors: one default event manager per
 * process, built on first use from the `EVENT_*` environment.
 */
import type { DeadLetterQueue } from './dead-letter.js'
import { createEventManager, type EventConsumer, type EventManager } from './manager.js'
import type { EventPublisher } from './publisher.js'

let current: EventManager | undefined
const watched = new WeakSet<EventManager>()

/** Forgets the default manager when it closes, so that the next accessor builds a new one. */
function watch(manager: EventManager): EventManager {
  if (!watched.has(manager)) {
    watched.add(manager)
    manager.onClose(() => {
      if (current === manager) current = undefined
    })
  }
  return manager
}

/**
 * The default event manager, created on first use from the `EVENT_*`
 * environment (`createEventManager()`). Closing it resets it: the next call
 * creates a new one. Close it at shutdown (`closeEventManager()`), or its
 * connections keep the process alive.
 *
 * @example
 * ```ts
 * import { getEventManager, newEvent } from 'rx-redis-streams'
 * await getEventManager().publish('user-events', newEvent('user.signup', { userId: 123 }))
 * ```
 * @throws {ConfigError} when the environment is invalid
 */
export function getEventManager(): EventManager {
  if (current === undefined || current.closed) current = watch(createEventManager())
  return current
}

/**
 * Replaces the default event manager (tests, or a manager built from options);
 * `undefined` forgets it without closing it.
 *
 * @example
 * ```ts
 * import { createEventManager, setEventManager } from 'rx-redis-streams'
 * setEventManager(createEventManager({ backend: 'memory' }))
 * ```
 */
export function setEventManager(manager: EventManager | undefined): void {
  current = manager === undefined ? undefined : watch(manager)
}

/**
 * Publishing alone, from the default event manager.
 *
 * @example
 * ```ts
 * import { getEventPublisher, newEvent } from 'rx-redis-streams'
 * await getEventPublisher().publish('user-events', newEvent('user.action', { click: 1 }))
 * ```
 */
export function getEventPublisher(): EventPublisher {
  return getEventManager().publisher
}

/**
 * Consuming alone, from the default event manager.
 *
 * @example
 * ```ts
 * import { getEventConsumer } from 'rx-redis-streams'
 * getEventConsumer().subscribe('user-events', 'user-signup-processor', async (msg) => console.log(msg.event.payload))
 * ```
 */
export function getEventConsumer(): EventConsumer {
  return getEventManager().consumer
}

/**
 * Dead letter management, from the default event manager.
 *
 * @example
 * ```ts
 * import { getDeadLetterQueue } from 'rx-redis-streams'
 * for (const letter of await getDeadLetterQueue().getMessages('user-events', 10)) console.log(letter.error)
 * ```
 */
export function getDeadLetterQueue(): DeadLetterQueue {
  return getEventManager().deadLetters
}

/**
 * Closes the default event manager, if one was created (idempotent); the next
 * accessor call creates a new one.
 *
 * @example
 * ```ts
 * import { closeEventManager } from 'rx-redis-streams'
 * process.once('SIGTERM', () => void closeEventManager())
 * ```
 */
export async function closeEventManager(): Promise<void> {
  const manager = current
  current = undefined
  await manager?.close()
}
