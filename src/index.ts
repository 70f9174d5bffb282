export { createEventManager, EventManager, type EventManagerOptions, type Topic, type EventConsumer, type SubscribeOptions, type HandlerSubscription } from './manager.js'
export { newEvent, uuidv7, safeJsonParse, encodeEvent, decodeEntry, assertJsonPayload, DEFAULT_MAX_PAYLOAD_DEPTH, StoredEvent, type Event, type NewEventOptions, type WireFormat } from './event.js'
export type { Message, RetryDefaults } from './consumer/message.js'
export { declareDemand, releaseUnhandled, isWithdrawn } from './consumer/message.js'
export type { ConsumeOptions, SubscriptionState, SubscriptionStatus } from './consumer/subscription.js'
export { CONSUMER_READER_CLIENT_SETTINGS } from './consumer/options.js'
export { isSettleable, reasonText, type Settleable, type Outcome, type NackOptions } from './settle.js'
export { BatchPublisher, type EventPublisher } from './publisher.js'
export { DeadLetterQueue, type DeadLetter, type ReplayAllOptions } from './dead-letter.js'
export { validateTopic, MAX_TOPIC_LENGTH } from './topic.js'
export { loadConfig, type ConfigOptions, type Config } from './config/index.js'
export { currentHandlingContext, type HandlingContext } from './context.js'
export type { StreamBackend, StartFrom } from './backend/types.js'
export {
  EventSystemError,
  InvalidTopicError,
  InvalidNameError,
  PayloadTooLargeError,
  SerializationError,
  DecodeError,
  ConfigError,
  ConsumerTimeoutError,
  BackendError,
  GroupMissingError,
  ClosedError,
  NotFoundError,
  isPermanentError,
  PayloadTooDeepError,
  PublishOutcomeUnknownError,
  ConnectionError,
  CommandTimeoutError,
  NotMasterError,
  ReplicationTimeoutError,
  ConsumerNameInUseError,
  MalformedPayloadError,
  type DecodeReason,
  type ConfigIssue,
} from './errors.js'
export { Share, CompositeSettleable, creditLimit } from './shared-settlement.js'
export { getEventManager, setEventManager, getEventPublisher, getEventConsumer, getDeadLetterQueue, closeEventManager } from './globals.js'
export {
  collectStats,
  topicStats,
  toSpecShape,
  type SpecStats,
  type SpecTopicStats,
  type SpecConsumerGroupStats,
  type EventStats,
  type TopicStats,
  type GroupStats,
  type ConsumerStats,
  type ConsumerGroupStats,
  type StatsOptions,
} from './stats.js'
export {
  checkHealth,
  UnhealthyError,
  type HealthReport,
  type HealthOptions,
  type BackendHealth,
  type SubscriptionHealth,
  type PromoterHealth,
  type HealthSource,
} from './health.js'
export { createLogger, redactingLogger, scrubText, messageLogFields, REDACTED_PATHS, type CreateLoggerOptions, type MessageLogFields } from './telemetry/logging.js'
export {
  isTracingEnabled,
  traceContextHook,
  withSendSpan,
  startProcessSpan,
  parseTraceparent,
  formatTraceparent,
  type ProcessSpan,
} from './telemetry/tracing.js'
export { observeGroupGauges, GROUP_LAG_METRIC, GROUP_PENDING_METRIC, type GroupSample, type GroupGaugeOptions } from './telemetry/gauges.js'
export { INSTRUMENTATION_SCOPE, INSTRUMENTATION_VERSION } from './telemetry/instruments.js'
export type { Logger } from './logger.js'
export type { PublishHook } from './publisher.js'
export { createTestEventManager, waitForDrained, DrainTimeoutError, TEST_DEFAULTS, MemoryBackend, type MemoryBackendOptions, type WaitForDrainedOptions, type DrainState } from './testing.js'
