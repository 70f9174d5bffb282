import { inspect } from 'node:util'
import fc from 'fast-check'
import { describe, expect, it, vi } from 'vitest'
import {
  BooleanInput,
  Duration,
  DurationInput,
  ENV_VARIABLES,
  formatDuration,
  loadConfig,
  maskUrl,
  parseDuration,
  redactSecrets,
  type Config,
  type ConfigOptions,
} from '../../src/config/index.js'
import { ConfigError } from '../../src/errors.js'

/** Loads with only the given environment (never the process's own). */
const load = (env: NodeJS.ProcessEnv, options: ConfigOptions = {}, logger?: { warn(obj: object, msg?: string): void }): Config =>
  loadConfig(options, env, logger)

/** The ConfigError thrown by loading, or a failure. */
function configError(env: NodeJS.ProcessEnv, options: ConfigOptions = {}): ConfigError {
  try {
    load(env, options)
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    return error as ConfigError
  }
  throw new Error('expected a ConfigError')
}

/** Everything an error exposes: message, stack, issues, every own property. */
function everythingIn(error: Error): string {
  return [error.message, error.stack ?? '', JSON.stringify(error, Object.getOwnPropertyNames(error)), inspect(error, { depth: 5 })].join('\n')
}

describe('loadConfig defaults', () => {
  const config = load({})

  it.each([
    ['consumerTimeoutMs', 30_000],
    ['maxRetries', 3],
    ['retryBackoffMs', 1_000],
    ['dlqTtlMs', 86_400_000],
    ['staleConsumerTimeoutMs', 300_000],
    ['batchSize', 10],
    ['maxPendingMessages', 1_000],
    ['claimMinIdleTimeMs', 60_000],
    ['claimIntervalMs', 30_000],
    ['delayedQueueEnabled', true],
    ['delayedQueueCheckIntervalMs', 1_000],
    ['keyPrefix', 'event:'],
    ['maxPayloadBytes', 1_048_576],
  ] as const)('%s defaults to %s', (field, expected) => {
    expect(config[field]).toBe(expected)
  })

  it('leaves streamMaxLen unset (unbounded)', () => {
    expect(config.streamMaxLen).toBeUndefined()
    expect('streamMaxLen' in config).toBe(false)
  })

  it('connects to redis://127.0.0.1:6379, database 0, no TLS, no credentials', () => {
    expect(config.redis).toEqual({ mode: 'standalone', hosts: [{ host: '127.0.0.1', port: 6379 }], db: 0, tls: false })
  })

  it('reads process.env when no environment is given', () => {
    vi.stubEnv('EVENT_BATCH_SIZE', '42')
    try {
      expect(loadConfig().batchSize).toBe(42)
    } finally {
      vi.unstubAllEnvs()
    }
  })
})

describe('loadConfig reads every variable', () => {
  it.each([
    ['EVENT_CONSUMER_TIMEOUT', '10s', 'consumerTimeoutMs', 10_000],
    ['EVENT_MAX_RETRIES', '5', 'maxRetries', 5],
    ['EVENT_MAX_RETRIES', '0', 'maxRetries', 0],
    ['EVENT_RETRY_BACKOFF', '250ms', 'retryBackoffMs', 250],
    ['EVENT_RETRY_BACKOFF', '0ms', 'retryBackoffMs', 0],
    ['EVENT_DLQ_TTL', '7d', 'dlqTtlMs', 7 * 86_400_000],
    ['EVENT_STALE_CONSUMER_TIMEOUT', '1h30m', 'staleConsumerTimeoutMs', 5_400_000],
    ['EVENT_BATCH_SIZE', '100', 'batchSize', 100],
    ['EVENT_MAX_PENDING_MESSAGES', '5000', 'maxPendingMessages', 5_000],
    ['EVENT_CLAIM_MIN_IDLE_TIME', '2m', 'claimMinIdleTimeMs', 120_000],
    ['EVENT_CLAIM_INTERVAL', '1m30s500ms', 'claimIntervalMs', 90_500],
    ['EVENT_DELAYED_QUEUE_ENABLED', 'false', 'delayedQueueEnabled', false],
    ['EVENT_DELAYED_QUEUE_CHECK_INTERVAL', '100ms', 'delayedQueueCheckIntervalMs', 100],
    ['EVENT_KEY_PREFIX', 'myapp:', 'keyPrefix', 'myapp:'],
    ['EVENT_KEY_PREFIX', '', 'keyPrefix', ''],
    ['EVENT_MAX_PAYLOAD_BYTES', '2048', 'maxPayloadBytes', 2_048],
    ['EVENT_STREAM_MAX_LEN', '100000', 'streamMaxLen', 100_000],
  ] as const)('%s=%s -> %s', (variable, value, field, expected) => {
    expect(load({ [variable]: value })[field]).toBe(expected)
  })

  it.each([
    ['true', true], ['TRUE', true], ['1', true], ['yes', true], ['Yes', true],
    ['false', false], ['False', false], ['0', false], ['no', false], ['NO', false],
  ] as const)('EVENT_DELAYED_QUEUE_ENABLED=%s is %s', (value, expected) => {
    expect(load({ EVENT_DELAYED_QUEUE_ENABLED: value }).delayedQueueEnabled).toBe(expected)
  })

  it('names a variable for every option', () => {
    const options: Record<keyof ConfigOptions, true> = {
      redisUrl: true, redisHosts: true, redisUsername: true, redisPassword: true, redisDb: true, redisAddr: true,
      redisMasterName: true, consumerTimeout: true, maxRetries: true, retryBackoff: true, dlqTtl: true,
      staleConsumerTimeout: true, batchSize: true, maxPendingMessages: true, claimMinIdleTime: true, claimInterval: true,
      delayedQueueEnabled: true, delayedQueueCheckInterval: true, keyPrefix: true, maxPayloadBytes: true, streamMaxLen: true,
      maxPayloadDepth: true, publishDedupeWindow: true, wireFormat: true,
      redisTlsCa: true, redisTlsCert: true, redisTlsKey: true, redisTlsServername: true, redisTlsRejectUnauthorized: true,
      commandTimeout: true, publishWaitReplicas: true, publishWaitTimeout: true,
    }
    expect(Object.keys(ENV_VARIABLES).sort()).toEqual(Object.keys(options).sort())
    for (const variable of Object.values(ENV_VARIABLES)) expect(variable).toMatch(/^EVENT_[A-Z_]+$/)
  })
})

describe('loadConfig options object', () => {
  it('takes every setting from the object, durations as text or milliseconds', () => {
    const config = load({}, {
      consumerTimeout: '10s',
      maxRetries: 7,
      retryBackoff: 500,
      dlqTtl: '1h',
      staleConsumerTimeout: 60_000,
      batchSize: 20,
      maxPendingMessages: 200,
      claimMinIdleTime: '30s',
      claimInterval: 5_000,
      delayedQueueEnabled: false,
      delayedQueueCheckInterval: '200ms',
      keyPrefix: 'app:',
      maxPayloadBytes: 4_096,
      streamMaxLen: 1_000,
    })
    expect(config).toMatchObject({
      consumerTimeoutMs: 10_000,
      maxRetries: 7,
      retryBackoffMs: 500,
      dlqTtlMs: 3_600_000,
      staleConsumerTimeoutMs: 60_000,
      batchSize: 20,
      maxPendingMessages: 200,
      claimMinIdleTimeMs: 30_000,
      claimIntervalMs: 5_000,
      delayedQueueEnabled: false,
      delayedQueueCheckIntervalMs: 200,
      keyPrefix: 'app:',
      maxPayloadBytes: 4_096,
      streamMaxLen: 1_000,
    })
  })

  it('wins over the variable of the same setting', () => {
    const config = load({ EVENT_BATCH_SIZE: '50', EVENT_CONSUMER_TIMEOUT: '1m', EVENT_MAX_RETRIES: '9' }, { batchSize: 5, consumerTimeout: '2s' })
    expect(config.batchSize).toBe(5)
    expect(config.consumerTimeoutMs).toBe(2_000)
    expect(config.maxRetries).toBe(9) // not in the object: the variable applies
  })

  it('treats an option set to undefined as not set', () => {
    expect(load({ EVENT_BATCH_SIZE: '50' }, { batchSize: undefined }).batchSize).toBe(50)
  })

  it('wins over an invalid variable without reporting it', () => {
    expect(load({ EVENT_BATCH_SIZE: 'lots' }, { batchSize: 5 }).batchSize).toBe(5)
  })

  it('wins with its Redis URL over the variable', () => {
    const config = load({ EVENT_REDIS_URL: 'redis://env-host:6379' }, { redisUrl: 'redis://option-host:7000' })
    expect(config.redis.hosts).toEqual([{ host: 'option-host', port: 7000 }])
  })

  it('replaces the whole Redis location of the environment', () => {
    const config = load({ EVENT_REDIS_URL: 'redis://env-host:6379' }, { redisHosts: ['a:7000', 'b:7001'] })
    expect(config.redis.mode).toBe('cluster')
    expect(config.redis.hosts).toEqual([{ host: 'a', port: 7000 }, { host: 'b', port: 7001 }])
  })

  it('names the option, not the variable, in errors', () => {
    const error = configError({}, { consumerTimeout: '5 minutes', batchSize: 0, redisHosts: 'a:b' })
    expect(error.issues.map((i) => i.variable).sort()).toEqual(['batchSize', 'consumerTimeout', 'redisHosts'])
    expect(error.message).toContain('consumerTimeout=5 minutes')
  })

  it('refuses numbers that are not whole milliseconds', () => {
    const error = configError({}, { consumerTimeout: 1.5, retryBackoff: -1, claimInterval: Number.NaN })
    expect(error.issues.map((i) => i.variable).sort()).toEqual(['claimInterval', 'consumerTimeout', 'retryBackoff'])
  })
})

describe('Redis location precedence', () => {
  const hosts = 'h1:7000,h2:7001'

  it('EVENT_REDIS_URL wins over EVENT_REDIS_HOSTS and EVENT_REDIS_ADDR', () => {
    const config = load({ EVENT_REDIS_URL: 'redis://url-host:6380', EVENT_REDIS_HOSTS: hosts, EVENT_REDIS_ADDR: 'addr-host:6381' })
    expect(config.redis.mode).toBe('standalone')
    expect(config.redis.hosts).toEqual([{ host: 'url-host', port: 6380 }])
  })

  it('EVENT_REDIS_HOSTS wins over EVENT_REDIS_ADDR', () => {
    const config = load({ EVENT_REDIS_HOSTS: 'hosts-host:6390', EVENT_REDIS_ADDR: 'addr-host:6381' })
    expect(config.redis.hosts).toEqual([{ host: 'hosts-host', port: 6390 }])
  })

  it('EVENT_REDIS_ADDR is used when alone, with password and db, and logs a deprecation warning', () => {
    const warn = vi.fn()
    const config = load({ EVENT_REDIS_ADDR: 'legacy:6385', EVENT_REDIS_PASSWORD: 'pw', EVENT_REDIS_DB: '4' }, {}, { warn })
    expect(config.redis).toEqual({ mode: 'standalone', hosts: [{ host: 'legacy', port: 6385 }], db: 4, tls: false, password: 'pw' })
    expect(warn).toHaveBeenCalledTimes(1)
    const [fields, message] = warn.mock.calls[0] as [object, string]
    expect(fields).toEqual({ variable: 'EVENT_REDIS_ADDR' })
    expect(message).toMatch(/EVENT_REDIS_ADDR is deprecated/)
    expect(message).toMatch(/EVENT_REDIS_URL/)
    expect(JSON.stringify(warn.mock.calls)).not.toContain('pw')
  })

  it('warns about the redisAddr option by its name', () => {
    const warn = vi.fn()
    load({}, { redisAddr: 'legacy:6385' }, { warn })
    expect(warn).toHaveBeenCalledWith({ variable: 'redisAddr' }, expect.stringMatching(/redisAddr is deprecated/))
  })

  it('does not warn when EVENT_REDIS_ADDR is not set', () => {
    const warn = vi.fn()
    load({ EVENT_REDIS_HOSTS: 'a:1' }, {}, { warn })
    expect(warn).not.toHaveBeenCalled()
  })

  it('defaults to redis://127.0.0.1:6379', () => {
    expect(load({}).redis.hosts).toEqual([{ host: '127.0.0.1', port: 6379 }])
  })

  it('EVENT_REDIS_HOSTS with one host is standalone, with username, password and db', () => {
    const config = load({ EVENT_REDIS_HOSTS: 'cache:6390', EVENT_REDIS_USERNAME: 'app', EVENT_REDIS_PASSWORD: 'pw', EVENT_REDIS_DB: '3' })
    expect(config.redis).toEqual({ mode: 'standalone', hosts: [{ host: 'cache', port: 6390 }], username: 'app', password: 'pw', db: 3, tls: false })
  })

  it('a host without a port gets 6379, IPv6 in brackets is understood, spaces are trimmed', () => {
    expect(load({ EVENT_REDIS_HOSTS: 'cache, [::1]:7000' }).redis.hosts).toEqual([
      { host: 'cache', port: 6379 },
      { host: '::1', port: 7000 },
    ])
  })

  it('two or more hosts mean Redis Cluster', () => {
    const config = load({ EVENT_REDIS_HOSTS: 'n1:7000,n2:7001,n3:7002', EVENT_REDIS_PASSWORD: 'pw' })
    expect(config.redis.mode).toBe('cluster')
    expect(config.redis.hosts).toHaveLength(3)
    expect(config.redis.password).toBe('pw')
  })

  it('Redis Cluster refuses a database other than 0', () => {
    const error = configError({ EVENT_REDIS_HOSTS: hosts, EVENT_REDIS_DB: '2' })
    expect(error.issues).toEqual([{ variable: 'EVENT_REDIS_DB', value: '2', message: 'Redis Cluster has only database 0' }])
  })

  it('EVENT_REDIS_MASTER_NAME means Sentinel; the hosts are the sentinels', () => {
    const config = load({ EVENT_REDIS_HOSTS: 's1:26379,s2:26379,s3:26379', EVENT_REDIS_MASTER_NAME: 'mymaster', EVENT_REDIS_PASSWORD: 'pw' })
    expect(config.redis.mode).toBe('sentinel')
    expect(config.redis.masterName).toBe('mymaster')
    expect(config.redis.hosts).toEqual([
      { host: 's1', port: 26379 },
      { host: 's2', port: 26379 },
      { host: 's3', port: 26379 },
    ])
  })

  it('an empty username, password or master name means not set', () => {
    const config = load({ EVENT_REDIS_USERNAME: '', EVENT_REDIS_PASSWORD: '', EVENT_REDIS_MASTER_NAME: '' })
    expect(config.redis).toEqual({ mode: 'standalone', hosts: [{ host: '127.0.0.1', port: 6379 }], db: 0, tls: false })
  })
})

describe('Redis URLs', () => {
  it('redis:// reads host, port, user, password and db (URL-decoded)', () => {
    const config = load({ EVENT_REDIS_URL: 'redis://app%40corp:p%40ss%3Aw%2Frd@cache.internal:6390/5' })
    expect(config.redis).toEqual({
      mode: 'standalone',
      hosts: [{ host: 'cache.internal', port: 6390 }],
      username: 'app@corp',
      password: 'p@ss:w/rd',
      db: 5,
      tls: false,
    })
  })

  it('rediss:// turns TLS on', () => {
    const config = load({ EVENT_REDIS_URL: 'rediss://cache:6380' })
    expect(config.redis.tls).toBe(true)
    expect(config.redis.hosts).toEqual([{ host: 'cache', port: 6380 }])
  })

  it('a password-only URL (redis://:pw@host) has no username', () => {
    const config = load({ EVENT_REDIS_URL: 'redis://:pw@cache' })
    expect(config.redis.password).toBe('pw')
    expect(config.redis.username).toBeUndefined()
    expect(config.redis.hosts).toEqual([{ host: 'cache', port: 6379 }])
  })

  it('IPv6 hosts lose their brackets', () => {
    expect(load({ EVENT_REDIS_URL: 'redis://[::1]:7000' }).redis.hosts).toEqual([{ host: '::1', port: 7000 }])
  })

  it('credentials and db in the URL win over the variables, which fill in what the URL lacks', () => {
    const fromUrl = load({ EVENT_REDIS_URL: 'redis://u:url-pw@h/1', EVENT_REDIS_USERNAME: 'env-user', EVENT_REDIS_PASSWORD: 'env-pw', EVENT_REDIS_DB: '2' })
    expect(fromUrl.redis).toMatchObject({ username: 'u', password: 'url-pw', db: 1 })
    const filled = load({ EVENT_REDIS_URL: 'redis://h', EVENT_REDIS_USERNAME: 'env-user', EVENT_REDIS_PASSWORD: 'env-pw', EVENT_REDIS_DB: '2' })
    expect(filled.redis).toMatchObject({ username: 'env-user', password: 'env-pw', db: 2 })
  })

  it('memory:// selects the in-memory backend without hosts', () => {
    expect(load({ EVENT_REDIS_URL: 'memory://' }).redis).toEqual({ mode: 'memory', hosts: [], db: 0, tls: false })
    expect(load({}, { redisUrl: 'memory://' }).redis.mode).toBe('memory')
  })

  it('a URL with a master name is a single sentinel', () => {
    const config = load({ EVENT_REDIS_URL: 'redis://sentinel:26379', EVENT_REDIS_MASTER_NAME: 'main' })
    expect(config.redis).toMatchObject({ mode: 'sentinel', masterName: 'main', hosts: [{ host: 'sentinel', port: 26379 }] })
  })

  it.each([
    ['http://cache:6379', /unsupported scheme/],
    ['cache:6379', /unsupported scheme|valid/],
    ['redis://', /valid|host/],
    ['redis://cache:6379/x', /database index/],
    ['redis://cache:99999', /valid/],
    ['not a url', /valid/],
  ])('refuses EVENT_REDIS_URL=%s', (url, message) => {
    const error = configError({ EVENT_REDIS_URL: url })
    expect(error.issues).toHaveLength(1)
    expect(error.issues[0]?.variable).toBe('EVENT_REDIS_URL')
    expect(error.issues[0]?.value).toBe(url)
    expect(error.issues[0]?.message).toMatch(message)
  })
})

describe('invalid values', () => {
  it.each([
    ['EVENT_CONSUMER_TIMEOUT', '5 minutes'],
    ['EVENT_CONSUMER_TIMEOUT', '0s'],
    ['EVENT_CONSUMER_TIMEOUT', '30'],
    ['EVENT_CONSUMER_TIMEOUT', ''],
    ['EVENT_MAX_RETRIES', '-1'],
    ['EVENT_MAX_RETRIES', 'three'],
    ['EVENT_RETRY_BACKOFF', '-1s'],
    ['EVENT_DLQ_TTL', '1.5h'],
    ['EVENT_STALE_CONSUMER_TIMEOUT', '5M'],
    ['EVENT_BATCH_SIZE', '0'],
    ['EVENT_BATCH_SIZE', '1.5'],
    ['EVENT_BATCH_SIZE', '1e3'],
    ['EVENT_MAX_PENDING_MESSAGES', '-5'],
    ['EVENT_CLAIM_MIN_IDLE_TIME', '1x'],
    ['EVENT_CLAIM_INTERVAL', 'soon'],
    ['EVENT_DELAYED_QUEUE_ENABLED', 'maybe'],
    ['EVENT_DELAYED_QUEUE_ENABLED', ''],
    ['EVENT_DELAYED_QUEUE_CHECK_INTERVAL', '1s 1ms'],
    ['EVENT_KEY_PREFIX', '{app}:'],
    ['EVENT_KEY_PREFIX', 'my app:'],
    ['EVENT_MAX_PAYLOAD_BYTES', '0'],
    ['EVENT_STREAM_MAX_LEN', '0'],
    ['EVENT_STREAM_MAX_LEN', 'all'],
    ['EVENT_REDIS_DB', '-1'],
    ['EVENT_REDIS_DB', 'one'],
    ['EVENT_REDIS_HOSTS', 'a:1,,b:2'],
    ['EVENT_REDIS_HOSTS', 'cache:port'],
    ['EVENT_REDIS_HOSTS', 'cache:70000'],
    ['EVENT_REDIS_ADDR', 'cache:0'],
    ['EVENT_REDIS_ADDR', 'redis://cache:6379'],
  ])('%s=%j is reported with its name and value', (variable, value) => {
    const error = configError({ [variable]: value })
    expect(error.issues).toHaveLength(1)
    const [issue] = error.issues
    expect(issue?.variable).toBe(variable)
    expect(issue?.value).toBe(value)
    expect(issue?.message.length).toBeGreaterThan(5)
    expect(issue?.message).not.toMatch(/\[object Object\]/)
    expect(error.message).toContain(`${variable}=${value}`)
    expect(error.code).toBe('INVALID_CONFIG')
  })

  it('explains what a duration looks like', () => {
    const error = configError({ EVENT_CONSUMER_TIMEOUT: '5 minutes' })
    expect(error.issues[0]?.message).toMatch(/250ms, 30s, 5m/)
  })

  it('reports every invalid variable at once', () => {
    const error = configError({
      EVENT_CONSUMER_TIMEOUT: 'soon',
      EVENT_MAX_RETRIES: '-1',
      EVENT_BATCH_SIZE: '0',
      EVENT_DELAYED_QUEUE_ENABLED: 'maybe',
      EVENT_REDIS_URL: 'ftp://x',
      EVENT_REDIS_DB: 'x',
      EVENT_STREAM_MAX_LEN: '-3',
    })
    expect(error.issues.map((i) => i.variable).sort()).toEqual([
      'EVENT_BATCH_SIZE',
      'EVENT_CONSUMER_TIMEOUT',
      'EVENT_DELAYED_QUEUE_ENABLED',
      'EVENT_MAX_RETRIES',
      'EVENT_REDIS_DB',
      'EVENT_REDIS_URL',
      'EVENT_STREAM_MAX_LEN',
    ])
    for (const issue of error.issues) expect(error.message).toContain(`${issue.variable}=${issue.value}`)
  })

  it('reports an invalid Redis variable even when a URL takes precedence', () => {
    const error = configError({ EVENT_REDIS_URL: 'redis://h', EVENT_REDIS_HOSTS: 'x:y' })
    expect(error.issues.map((i) => i.variable)).toEqual(['EVENT_REDIS_HOSTS'])
  })
})

describe('secrets never appear in errors', () => {
  const password = 'S3cr3t-P@ss:w/rd'
  const encoded = encodeURIComponent(password)

  it('masks EVENT_REDIS_PASSWORD among other errors', () => {
    const error = configError({ EVENT_REDIS_PASSWORD: password, EVENT_REDIS_DB: 'x', EVENT_BATCH_SIZE: password })
    const text = everythingIn(error)
    expect(text).not.toContain(password)
    expect(text).not.toContain(encoded)
    expect(error.issues.find((i) => i.variable === 'EVENT_BATCH_SIZE')?.value).toBe('***')
  })

  it('masks the password of an invalid URL: redis://user:***@host', () => {
    const error = configError({ EVENT_REDIS_URL: `redis://app:${encoded}@cache:6379/not-a-db` })
    expect(error.issues[0]?.value).toBe('redis://app:***@cache:6379/not-a-db')
    const text = everythingIn(error)
    expect(text).not.toContain(password)
    expect(text).not.toContain(encoded)
  })

  it('masks the password of a URL that does not even parse', () => {
    const error = configError({ EVENT_REDIS_URL: 'redis://app:hunter2@cache:notaport' })
    expect(error.issues[0]?.value).toBe('redis://app:***@cache:notaport')
    expect(everythingIn(error)).not.toContain('hunter2')
  })

  it('masks the password option and a password that leaks into another value', () => {
    const error = configError({}, { redisPassword: password, keyPrefix: `{${password}}`, redisUrl: `redis://u:${encoded}@h:1/x` })
    expect(everythingIn(error)).not.toContain(password)
    expect(everythingIn(error)).not.toContain(encoded)
  })

  it('masks the password of a malformed URL too', () => {
    for (const url of ['redis:/u:s3cretA@h:6379', 'redis//u:s3cretB@host', 'redis:u:s3cretD@host', 'redis://:s3cretF@']) {
      const error = configError({}, { redisUrl: url })
      expect(everythingIn(error)).not.toContain('s3cret')
    }
  })

  it('never prints random passwords, wherever they are configured', () => {
    fc.assert(
      // The marker keeps a short random secret from matching the error's own words ("valu" in "value").
      fc.property(fc.string({ minLength: 4, maxLength: 30 }).filter((s) => s.trim() === s && !/[\p{Cc}]/u.test(s)).map((s) => `¤${s}`), (secret) => {
        const error = configError({
          EVENT_REDIS_PASSWORD: secret,
          EVENT_REDIS_URL: `redis://user:${encodeURIComponent(secret)}@cache:6379/x`,
          EVENT_BATCH_SIZE: '0',
        })
        const text = [error.message, JSON.stringify(error.issues)].join('\n')
        expect(text).not.toContain(secret)
        expect(text).not.toContain(encodeURIComponent(secret))
      }),
      { numRuns: 200 },
    )
  })

  it('hides the password when the configuration is logged or serialized', () => {
    const config = load({ EVENT_REDIS_URL: `redis://app:${encoded}@cache:6379` })
    expect(config.redis.password).toBe(password)
    expect(JSON.stringify(config)).not.toContain(password)
    expect(JSON.stringify(config)).toContain('"password":"***"')
    expect(inspect(config, { depth: 5 })).not.toContain(password)
    expect({ ...config.redis }.password).toBe(password) // a copy still carries it for the connection
  })
})

describe('the configuration is frozen', () => {
  it('deeply', () => {
    const config = load({ EVENT_REDIS_HOSTS: 'a:1,b:2' })
    expect(Object.isFrozen(config)).toBe(true)
    expect(Object.isFrozen(config.redis)).toBe(true)
    expect(Object.isFrozen(config.redis.hosts)).toBe(true)
    for (const host of config.redis.hosts) expect(Object.isFrozen(host)).toBe(true)
    expect(() => {
      ;(config as { batchSize: number }).batchSize = 1
    }).toThrow(TypeError)
    expect(() => {
      ;(config.redis.hosts as { host: string; port: number }[]).push({ host: 'x', port: 1 })
    }).toThrow(TypeError)
  })

  it('and independent of the options array it came from', () => {
    const hosts = ['a:1', 'b:2']
    const config = load({}, { redisHosts: hosts })
    hosts.push('c:3')
    expect(config.redis.hosts).toHaveLength(2)
    expect(Object.isFrozen(hosts)).toBe(false)
  })
})

describe('Duration', () => {
  it.each([
    ['250ms', 250],
    ['30s', 30_000],
    ['5m', 300_000],
    ['24h', 86_400_000],
    ['1h30m', 5_400_000],
    ['1m30s500ms', 90_500],
    ['2d', 172_800_000],
    ['1d2h3m4s5ms', 93_784_005],
    ['0ms', 0],
    ['0s', 0],
    ['0', 0],
  ])('accepts %s = %i ms', (text, ms) => {
    expect(Duration.decode(text)).toEqual({ _tag: 'Right', right: ms })
    expect(parseDuration(text)).toBe(ms)
  })

  it.each(['-1s', '5 minutes', '10', '', '1.5x', '1.5s', ' 5s', '5s ', '5S', '30s5m', '1h1h', 'ms', 's', '1w', '99999999999999999999d'])(
    'rejects %j',
    (text) => {
      expect(Duration.decode(text)._tag).toBe('Left')
      expect(parseDuration(text)).toBeUndefined()
    },
  )

  it('takes a bare 0 where the README documents it as "off" (a duration of 0 elsewhere is still refused by name)', () => {
    expect(load({ EVENT_PUBLISH_DEDUPE_WINDOW: '0' }).publishDedupeWindowMs).toBe(0)
    expect(load({ EVENT_CLAIM_INTERVAL: '0' }).claimIntervalMs).toBe(0)
    expect(configError({ EVENT_CONSUMER_TIMEOUT: '0' }).issues[0]?.variable).toBe('EVENT_CONSUMER_TIMEOUT')
  })

  it('rejects non-strings', () => {
    for (const value of [30, null, undefined, true, {}, ['30s']]) expect(Duration.decode(value)._tag).toBe('Left')
  })

  it('encodes back to text that decodes to the same milliseconds', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 400 * 86_400_000 }), (ms) => {
        const text = Duration.encode(ms)
        expect(Duration.decode(text)).toEqual({ _tag: 'Right', right: ms })
      }),
    )
    expect(formatDuration(5_400_000)).toBe('1h30m')
    expect(formatDuration(0)).toBe('0ms')
  })

  it('is a type guard for milliseconds', () => {
    expect(Duration.is(1_000)).toBe(true)
    expect(Duration.is(-1)).toBe(false)
    expect(Duration.is('1s')).toBe(false)
  })

  it('DurationInput also takes whole milliseconds', () => {
    expect(DurationInput.decode(1_500)).toEqual({ _tag: 'Right', right: 1_500 })
    expect(DurationInput.decode('1s')).toEqual({ _tag: 'Right', right: 1_000 })
    expect(DurationInput.decode(1.5)._tag).toBe('Left')
    expect(DurationInput.decode(-1)._tag).toBe('Left')
  })

  it('BooleanInput passes real booleans through', () => {
    expect(BooleanInput.decode(false)).toEqual({ _tag: 'Right', right: false })
    expect(BooleanInput.decode(1)._tag).toBe('Left')
  })
})

describe('maskUrl and redactSecrets', () => {
  it.each([
    ['redis://user:secret@host:6379/0', 'redis://user:***@host:6379/0'],
    ['rediss://:secret@host', 'rediss://:***@host'],
    ['redis://user@host', 'redis://user@host'],
    ['redis://host:6379', 'redis://host:6379'],
    ['redis://u:pa@ss/w?rd@host:1', 'redis://u:***@host:1'],
    ['memory://', 'memory://'],
    ['not a url', 'not a url'],
  ])('maskUrl(%s) = %s', (url, masked) => {
    expect(maskUrl(url)).toBe(masked)
  })

  it('redactSecrets replaces plain and URL-encoded forms, ignores empty secrets', () => {
    expect(redactSecrets('AUTH app p@ss and p%40ss', ['p@ss', undefined, ''])).toBe('AUTH app *** and ***')
    expect(redactSecrets('nothing here', [])).toBe('nothing here')
  })

  it('redactSecrets removes a longer secret whole before a shorter one inside it', () => {
    expect(redactSecrets('abcdef', ['abc', 'abcdef'])).toBe('***')
  })
})
