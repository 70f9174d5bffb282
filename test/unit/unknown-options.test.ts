/**
 * A key of createEventManager's options that is no option is reported, with
 * the closest valid name: a misspelt `url` (for `redisUrl`) would otherwise
 * connect to the default location without a word.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createEventManager, type EventManager, type EventManagerOptions } from '../../src/index.js'

const managers: EventManager[] = []
afterEach(async () => {
  await Promise.all(managers.splice(0).map((m) => m.close()))
})

/** A manager on the memory backend with a logger that keeps its warnings. */
function withWarnings(extra: Record<string, unknown>): { messages: string[]; details: Record<string, unknown>[] } {
  const messages: string[] = []
  const details: Record<string, unknown>[] = []
  const logger = {
    warn: (obj: Record<string, unknown>, msg?: string) => {
      details.push(obj)
      messages.push(msg ?? '')
    },
    info: () => undefined,
    debug: () => undefined,
    error: () => undefined,
    trace: () => undefined,
    fatal: () => undefined,
    child: () => logger,
    level: 'warn',
  }
  const options = { backend: 'memory', env: {}, logger, ...extra } as unknown as EventManagerOptions
  managers.push(createEventManager(options))
  return { messages, details }
}

describe('unknown options', () => {
  it('names a misspelt option and the one it probably means', () => {
    const { messages, details } = withWarnings({ url: 'memory://' })
    expect(messages).toContainEqual('option url is not an option of rx-redis-streams and is ignored; did you mean redisUrl?')
    expect(details).toContainEqual({ option: 'url', closest: 'redisUrl' })
  })

  it('suggests the nearest spelling (maxRetry → maxRetries) and says nothing for valid options', () => {
    const { messages } = withWarnings({ maxRetry: 2, maxRetries: 3, healthTimeout: 500, groupGauges: false })
    expect(messages.filter((m) => m.startsWith('option '))).toEqual(['option maxRetry is not an option of rx-redis-streams and is ignored; did you mean maxRetries?'])
  })

  it('warns without a suggestion when nothing is close', () => {
    const { messages } = withWarnings({ zzzqqq: 1 })
    expect(messages).toContainEqual('option zzzqqq is not an option of rx-redis-streams and is ignored')
  })
})
