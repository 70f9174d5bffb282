/**
 * Derives the least-privilege ACL roles (README, "Least-privilege ACL users"):
 * runs each role's workload (publisher, promoter, consumer, operator, DLQ
 * admin) against a private redis-server and prints every command it sent, as
 * MONITOR shows them — commands run inside Lua scripts marked "(script)".
 *
 *   npx tsx bench/acl-commands.ts
 */
import { Redis } from 'ioredis'
import { createEventManager, newEvent, type Message } from '../src/index.js'
import { startRedisServer } from '../test/support/redis-server.js'

const server = await startRedisServer()
const monitorClient = new Redis(server.url)
const seen = new Map<string, Set<string>>()
let phase = 'setup'
const monitor = await monitorClient.monitor()
monitor.on('monitor', (_time: string, args: string[], source: string) => {
  const name = (args[0] ?? '').toLowerCase()
  let cmd = name
  if (['xgroup', 'xinfo', 'client', 'script', 'config', 'acl', 'memory', 'object', 'command'].includes(name)) cmd = `${name}|${(args[1] ?? '').toLowerCase()}`
  const where = source.includes('lua') ? `${cmd} (script)` : cmd
  let set = seen.get(phase)
  if (!set) seen.set(phase, (set = new Set()))
  set.add(where)
})
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const topic = 'acl-topic'
const group = 'acl-group'
const opts = { redisUrl: server.url, env: {} }

phase = 'publisher'
const pub = createEventManager({ ...opts, delayedQueueEnabled: false })
await pub.publish(topic, newEvent('a', 1))
await pub.publish(topic, newEvent('a', 2))
await pub.publishBatch(topic, [newEvent('b', 1), newEvent('b', 2)])
const delayedId = await pub.publishWithDelay(topic, newEvent('later', 1), 60_000)
await pub.publishWithDelay(topic, newEvent('soon', 1), 100)
await pub.cancelDelayed(topic, delayedId)
await pub.health()
await sleep(300)
await pub.close()

phase = 'publisher-nodedupe'
const pub0 = createEventManager({ ...opts, delayedQueueEnabled: false, publishDedupeWindow: 0 })
await pub0.publish(topic, newEvent('a', 1))
await pub0.publishBatch(topic, [newEvent('b', 1), newEvent('b', 2)])
await pub0.close()

phase = 'promoter'
const prom = createEventManager({ ...opts, delayedQueueCheckInterval: 100 })
await prom.publishWithDelay(topic, newEvent('soon2', 1), 50)
await sleep(600)
await prom.close()

phase = 'consumer'
const con = createEventManager({ ...opts, delayedQueueEnabled: false, claimInterval: 200, claimMinIdleTime: 100, staleConsumerTimeout: 200, maxRetries: 1, retryBackoff: 10 })
const handled: string[] = []
const sub = con.topic(topic).consume({ group, startFrom: 'beginning' }).subscribe((m: Message) => {
  handled.push(m.event.name)
  if (m.event.name === 'b') void m.deadLetter(new Error('bad'))
  else if (m.event.name === 'a' && handled.filter((h) => h === 'a').length === 1) void m.nack(new Error('retry'))
  else void m.ack()
})
await sleep(1500)
sub.unsubscribe()
await sleep(300)
await con.health()
await con.close()

// A consumer draining a backlog: after a full read, read-ahead rounds go as one script (readPacked-1.lua: EVAL /
// EVALSHA, XREADGROUP inside it); a user without script permission falls back to plain XREADGROUP.
phase = 'setup'
const backlogTopic = 'acl-backlog'
const filler = createEventManager({ ...opts, delayedQueueEnabled: false })
await filler.publishBatch(backlogTopic, Array.from({ length: 200 }, (_, i) => newEvent('e', i)))
await filler.close()
phase = 'consumer-backlog'
const drainer = createEventManager({ ...opts, delayedQueueEnabled: false, claimInterval: 0 })
let drained = 0
const drainSub = drainer.topic(backlogTopic).consume({ group, startFrom: 'beginning', batchSize: 10 }).subscribe((m: Message) => {
  drained++
  void m.ack()
})
while (drained < 200) await sleep(20)
drainSub.unsubscribe()
await drainer.close()

phase = 'operator'
const op = createEventManager({ ...opts, delayedQueueEnabled: false })
await op.stats()
await op.stats(topic)
await op.health()
const letters = await op.deadLetters.list(topic)
if (letters[0]) await op.deadLetters.get(topic, letters[0].dlqId)
await op.deadLetters.count(topic)
await op.backend.listScheduled(topic, { count: 10 })
await op.backend.countScheduled(topic)
await op.close()

phase = 'dlq-admin'
const admin = createEventManager({ ...opts, delayedQueueEnabled: false })
const all = await admin.deadLetters.list(topic)
if (all[0]) await admin.deadLetters.replay(topic, all[0].dlqId)
if (all[1]) await admin.deadLetters.remove(topic, all[1].dlqId)
await admin.deadLetters.trimExpired(topic)
await admin.publishWithDelay(topic, newEvent('x', 1), 60_000)
const sched = await admin.backend.listScheduled(topic, { count: 10 })
if (sched[0]) await admin.cancelDelayed(topic, sched[0].eventId)
await admin.backend.promoteDue(topic, Date.now() + 3_600_000, 100)
await admin.deadLetters.purge(topic)
await admin.close()

phase = 'done'
await sleep(200)
for (const [p, set] of seen) console.log(p.padEnd(20), [...set].sort().join(' '))
monitorClient.disconnect()
await server.stop()
