import { InvalidNameError, InvalidTopicError } from './errors.js'

const TOPIC_PATTERN = /^[A-Za-z0-9._:-]+$/
const NAME_PATTERN = /^[A-Za-z0-9._:@-]+$/
/** The longest topic name accepted. */
export const MAX_TOPIC_LENGTH = 200

/**
 * Checks a topic name: letters, digits, `.`, `_`, `-`, `:`, 1 to 200 characters.
 * Braces are refused because the topic becomes the key's Cluster hash tag.
 *
 * @example
 * ```ts
 * import { validateTopic } from 'rx-redis-streams'
 * validateTopic('user-events') // ok
 * validateTopic('user events') // throws InvalidTopicError
 * ```
 * @throws {InvalidTopicError}
 */
export function validateTopic(topic: unknown): asserts topic is string {
  if (typeof topic !== 'string') throw new InvalidTopicError(String(topic), 'a topic must be a string')
  if (topic.length === 0) throw new InvalidTopicError(topic, 'a topic must not be empty')
  if (topic.length > MAX_TOPIC_LENGTH) throw new InvalidTopicError(topic, `a topic has at most ${MAX_TOPIC_LENGTH} characters`)
  if (!TOPIC_PATTERN.test(topic)) throw new InvalidTopicError(topic, 'allowed are letters, digits, ".", "_", "-" and ":"')
}

/** Checks a consumer group or consumer name (same alphabet as topics, plus `@`). */
export function validateName(kind: 'group' | 'consumer', name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidNameError(kind, String(name), 'must be a non-empty string')
  if (name.length > MAX_TOPIC_LENGTH) throw new InvalidNameError(kind, name, `at most ${MAX_TOPIC_LENGTH} characters`)
  if (!NAME_PATTERN.test(name)) throw new InvalidNameError(kind, name, 'allowed are letters, digits, ".", "_", "-", ":" and "@"')
}
