/**
 * Configuration: the `EVENT_*` environment (or an options object) decoded with
 * io-ts into a frozen {@link Config}.
 */
export type { Config, HostPort, RedisConnectionConfig, RedisMode } from './types.js'
export { loadConfig, warnUnknownOptions, DEFAULT_REDIS_URL, ENV_VARIABLES, type ConfigOptions, type ConfigLogger } from './load.js'
export { Duration, DurationInput, PositiveDurationInput, parseDuration, formatDuration, DURATION_HINT } from './duration.js'
export {
  BooleanInput,
  HostList,
  HostPortCodec,
  KeyPrefix,
  NonEmptyString,
  NonNegativeInteger,
  Password,
  PositiveInteger,
  RedisUrl,
  WireFormatInput,
  integerAtLeast,
  parseHostPort,
  type ParsedRedisUrl,
} from './codecs.js'
export { maskUrl, redactSecrets, MASK } from './secrets.js'
