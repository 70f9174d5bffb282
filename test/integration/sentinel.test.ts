import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEventManager, newEvent } from '../../src/index.js'
import { handleEach } from '../../operators/index.js'
import { freePort, startRedisServer, waitForRedis, type RedisServer } from '../support/redis-server.js'
import { randomName } from '../support/redis.js'
import { waitFor } from '../support/events.js'

describe('through Redis Sentinel', () => {
  let master: RedisServer
  let sentinel: ChildProcess
  let sentinelPort: number
  let dir: string

  beforeAll(async () => {
    master = await startRedisServer()
    sentinelPort = await freePort()
    dir = mkdtempSync(join(tmpdir(), 'rrs-sentinel-'))
    const conf = join(dir, 'sentinel.conf')
    writeFileSync(conf, [`port ${sentinelPort}`, 'bind 127.0.0.1', `dir ${dir}`, `sentinel monitor rrs-master 127.0.0.1 ${master.port} 1`, ''].join('\n'))
    sentinel = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' })
    await waitForRedis(sentinelPort)
  }, 30_000)

  afterAll(async () => {
    sentinel.kill('SIGKILL')
    await master.stop()
    rmSync(dir, { recursive: true, force: true })
  })

  it('finds the master by name (EVENT_REDIS_MASTER_NAME) and publishes and consumes through it', async () => {
    const events = createEventManager({ env: { EVENT_REDIS_HOSTS: `127.0.0.1:${sentinelPort}`, EVENT_REDIS_MASTER_NAME: 'rrs-master' } })
    try {
      expect(events.config.redis.mode).toBe('sentinel')
      const topic = randomName('sentinel')
      const handled: number[] = []
      const sub = events.topic(topic).consume({ group: randomName('g') }).pipe(handleEach((m) => void handled.push(m.event.payload as number))).subscribe()
      await events.publishBatch(topic, [newEvent('n', 1), newEvent('n', 2)])
      await waitFor(() => handled.length === 2)
      expect(handled).toEqual([1, 2])
      sub.unsubscribe()
    } finally {
      await events.close()
    }
  })
})
