/**
 * Connection settings of the configuration: TLS, the command timeout, empty
 * and unknown variables, warnings without a logger.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { loadConfig, type Config, type ConfigOptions } from '../../src/config/index.js'
import { closestVariable } from '../../src/config/load.js'
import { ConfigError } from '../../src/errors.js'
import { createEventManager } from '../../src/index.js'

const load = (env: NodeJS.ProcessEnv, options: ConfigOptions = {}, logger?: { warn(obj: object, msg?: string): void }): Config =>
  loadConfig(options, env, logger)

function configError(env: NodeJS.ProcessEnv, options: ConfigOptions = {}): ConfigError {
  try {
    load(env, options)
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    return error as ConfigError
  }
  throw new Error('expected a ConfigError')
}

// Not real key material: the config only checks for a PEM block.
const CA_PEM = '-----BEGIN CERTIFICATE-----\nTUlJQ0FURVNU\n-----END CERTIFICATE-----\n'
const CERT_PEM = '-----BEGIN CERTIFICATE-----\nQ0xJRU5UQ0VSVA==\n-----END CERTIFICATE-----\n'
const KEY_MARKER = 'S3CRETKEYMATERIAL'
const KEY_PEM = `-----BEGIN PRIVATE KEY-----\n${KEY_MARKER}\n-----END PRIVATE KEY-----\n`

afterEach(() => {
  vi.restoreAllMocks()
})

describe('empty and hostless locations', () => {
  it('EVENT_REDIS_URL= (empty) means unset: the hosts, or the default, are used', () => {
    expect(load({ EVENT_REDIS_URL: '' }).redis.hosts).toEqual([{ host: '127.0.0.1', port: 6379 }])
    expect(load({ EVENT_REDIS_URL: '', EVENT_REDIS_HOSTS: 'cache:7000' }).redis.hosts).toEqual([{ host: 'cache', port: 7000 }])
  })

  it('EVENT_REDIS_HOSTS=host without a port means port 6379 (documented)', () => {
    expect(load({ EVENT_REDIS_HOSTS: 'cache' }).redis.hosts).toEqual([{ host: 'cache', port: 6379 }])
    expect(load({ EVENT_REDIS_HOSTS: 'a,b:7001' }).redis.hosts).toEqual([
      { host: 'a', port: 6379 },
      { host: 'b', port: 7001 },
    ])
  })
})

describe('warnings', () => {
  it('an unknown EVENT_* variable names the closest valid one (logger)', () => {
    const warn = vi.fn()
    load({ EVENT_MAX_RETRY: '5' }, {}, { warn })
    expect(warn).toHaveBeenCalledTimes(1)
    expect(String(warn.mock.calls[0]?.[1])).toMatch(/EVENT_MAX_RETRY .*ignored.*did you mean EVENT_MAX_RETRIES\?/)
  })

  it('without a logger it goes to process.emitWarning', () => {
    const emitted = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined)
    load({ EVENT_CONSUMER_TIMOUT: '5s' })
    expect(emitted).toHaveBeenCalledTimes(1)
    expect(String(emitted.mock.calls[0]?.[0])).toMatch(/did you mean EVENT_CONSUMER_TIMEOUT\?/)
  })

  it('a name close to nothing is reported without a suggestion', () => {
    const warn = vi.fn()
    load({ EVENT_SOMETHING_ELSE_ENTIRELY_UNRELATED: '1' }, {}, { warn })
    expect(String(warn.mock.calls[0]?.[1])).toMatch(/is not a setting of rx-redis-streams and is ignored$/)
    expect(closestVariable('EVENT_BATCHSIZE')).toBe('EVENT_BATCH_SIZE')
  })

  it('known variables raise no warning', () => {
    const warn = vi.fn()
    load({ EVENT_MAX_RETRIES: '5', EVENT_REDIS_URL: 'redis://cache:6379', EVENT_COMMAND_TIMEOUT: '5s' }, {}, { warn })
    expect(warn).not.toHaveBeenCalled()
  })

  it('the EVENT_REDIS_ADDR deprecation is visible without a logger (DeprecationWarning)', () => {
    const emitted = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined)
    load({ EVENT_REDIS_ADDR: 'cache:6379' })
    expect(emitted).toHaveBeenCalledTimes(1)
    expect(String(emitted.mock.calls[0]?.[0])).toMatch(/EVENT_REDIS_ADDR is deprecated/)
    expect(emitted.mock.calls[0]?.[1]).toMatchObject({ type: 'DeprecationWarning' })
  })

  it('createEventManager without a logger makes the deprecation visible too', () => {
    const emitted = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined)
    const events = createEventManager({ backend: 'memory', env: { EVENT_REDIS_ADDR: 'cache:6379' } })
    void events.close()
    expect(emitted.mock.calls.some((c) => /EVENT_REDIS_ADDR is deprecated/.test(String(c[0])))).toBe(true)
  })
})

describe('claimInterval 0', () => {
  it('is accepted (claiming off) from the options object and the environment', () => {
    expect(load({}, { claimInterval: 0 }).claimIntervalMs).toBe(0)
    expect(load({ EVENT_CLAIM_INTERVAL: '0s' }).claimIntervalMs).toBe(0)
    const events = createEventManager({ backend: 'memory', env: {}, claimInterval: 0 })
    expect(events.config.claimIntervalMs).toBe(0)
    void events.close()
  })
})

describe('command timeout', () => {
  it('defaults to 10 s and takes durations', () => {
    expect(load({}).commandTimeoutMs).toBe(10_000)
    expect(load({ EVENT_COMMAND_TIMEOUT: '30s' }).commandTimeoutMs).toBe(30_000)
    expect(load({}, { commandTimeout: 1_500 }).commandTimeoutMs).toBe(1_500)
  })

  it('refuses 0 and garbage, by name', () => {
    expect(configError({ EVENT_COMMAND_TIMEOUT: '0' }).issues[0]?.variable).toBe('EVENT_COMMAND_TIMEOUT')
    expect(configError({}, { commandTimeout: 'soon' }).issues[0]?.variable).toBe('commandTimeout')
  })
})

describe('TLS', () => {
  it('PEM text in the variables turns TLS on with a CA, a client certificate and key, a server name', () => {
    const config = load({
      EVENT_REDIS_URL: 'redis://cache:6380',
      EVENT_REDIS_TLS_CA: CA_PEM,
      EVENT_REDIS_TLS_CERT: CERT_PEM,
      EVENT_REDIS_TLS_KEY: KEY_PEM,
      EVENT_REDIS_TLS_SERVERNAME: 'redis.internal',
      EVENT_REDIS_TLS_REJECT_UNAUTHORIZED: 'true',
    })
    expect(config.redis.tls).toBe(true)
    expect(config.redis.tlsOptions).toEqual({ ca: CA_PEM, cert: CERT_PEM, key: KEY_PEM, servername: 'redis.internal', rejectUnauthorized: true })
  })

  it('reads PEM files from paths, in the options object too', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrs-tls-'))
    try {
      writeFileSync(join(dir, 'ca.pem'), CA_PEM)
      const config = load({}, { redisUrl: 'rediss://cache:6380', redisTlsCa: join(dir, 'ca.pem'), redisTlsRejectUnauthorized: false })
      expect(config.redis.tlsOptions).toEqual({ ca: CA_PEM, rejectUnauthorized: false })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('a missing file or one without PEM is a ConfigError naming the variable', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rrs-tls-'))
    try {
      writeFileSync(join(dir, 'not-pem.txt'), 'hello')
      const missing = configError({ EVENT_REDIS_TLS_CA: join(dir, 'nope.pem') })
      expect(missing.issues[0]).toMatchObject({ variable: 'EVENT_REDIS_TLS_CA', message: expect.stringMatching(/ENOENT/) as unknown })
      const notPem = configError({ EVENT_REDIS_TLS_CERT: join(dir, 'not-pem.txt'), EVENT_REDIS_TLS_KEY: KEY_PEM })
      expect(notPem.issues[0]).toMatchObject({ variable: 'EVENT_REDIS_TLS_CERT', message: expect.stringMatching(/no PEM block/) as unknown })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('a certificate without its key (or the reverse) is refused; the key never shows', () => {
    const error = configError({ EVENT_REDIS_TLS_KEY: KEY_PEM })
    expect(error.issues[0]?.variable).toBe('EVENT_REDIS_TLS_KEY')
    expect(error.issues[0]?.message).toMatch(/EVENT_REDIS_TLS_CERT/)
    expect(`${error.message} ${inspect(error, { depth: 5 })}`).not.toContain(KEY_MARKER)
    expect(configError({ EVENT_REDIS_TLS_CERT: CERT_PEM }).issues[0]?.message).toMatch(/EVENT_REDIS_TLS_KEY/)
  })

  it('the key is masked when the configuration is printed or serialized', () => {
    const config = load({ EVENT_REDIS_TLS_CERT: CERT_PEM, EVENT_REDIS_TLS_KEY: KEY_PEM })
    expect(inspect(config, { depth: 10, showHidden: true })).not.toContain(KEY_MARKER)
    expect(JSON.stringify(config)).not.toContain(KEY_MARKER)
    expect(config.redis.tlsOptions?.key).toBe(KEY_PEM)
  })

  it('empty TLS variables mean unset', () => {
    expect(load({ EVENT_REDIS_TLS_CA: '', EVENT_REDIS_TLS_SERVERNAME: '' }).redis.tls).toBe(false)
  })
})
