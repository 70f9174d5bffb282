import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { redisUrl } from '../support/redis.js'

const root = fileURLToPath(new URL('../../', import.meta.url))

/** Each example and the lines its output must hold. */
const EXAMPLES: Record<string, readonly RegExp[]> = {
  'fan-out': [/^published 3 events to user-events-\w+$/m, /^analytics: user\.signup, user\.login, user\.logout$/m, /^notifications: user\.signup, user\.login, user\.logout$/m, /^audit: user\.signup, user\.login, user\.logout$/m, /^every group received every event$/m],
  'dead-letter-replay': [
    /^dead-lettered payment\.charge of group payments: payment gateway unavailable$/m,
    /^ {2}order A-1: charged 42 EUR$/m,
    /^dead letters left: 0$/m,
  ],
  'delayed-reminders': [/waiting: 3$/m, /^cancelled the reminder for user 3$/m, /remind user 1: finish your signup \(on time\)$/m, /remind user 2: your trial ends soon \(on time\)$/m, /^delivered 2 reminders; the cancelled one never came$/m],
  'typed-handlers': [/welcome-mailer: user 1 signed up with ada@example\.com \(premium\)$/m, /^rejected for welcome-mailer without retry: invalid_payload: user\.signup: Invalid value "three"/m, /^rejected for analytics without retry/m, /^handled 2 valid signups in each group; dead letters: 2$/m],
  'pattern-matching': [/^web-signups handled 1 of 4 events: user\.signup$/m, /^user-activity handled 3 of 4 events: user\.signup, user\.signup, user\.login$/m],
  'event-sourcing': [/^rebuilt from 4 events: ada has 70\.5$/m, /^rebuilt from 5 events: ada has 50$/m],
  saga: [/^order A-1 completed$/m, /^order B-2 cancelled: payment declined, inventory released$/m, /^A-1: completed; 2 saga events, all with correlation id \S+: yes$/m, /^B-2: cancelled; 3 saga events, all with correlation id \S+: yes$/m],
  'cqrs-projections': [/command rejected: user u9 does not exist$/m, /^write model: 3 users; 4 events published/m, /^query users-by-id u2: \{"userId":"u2","name":"Grace","plan":"premium"\}$/m, /^query plan-counts: \{"free":2,"premium":1\}$/m],
  'windowed-join': [
    /^joined order o-1 with payment p-1$/m,
    /^joined order o-2 with payment p-2$/m,
    /^unpaid order o-3$/m,
    /^unpaid order o-5$/m,
    /^user u-1 minute 12:00 → 2 orders$/m,
    /^acked through join results: 7 orders, 4 payments$/m,
    /^acked through count windows: 7 orders$/m,
    /^done$/m,
  ],
  'stats-and-health': [/^Topic orders-\w+: 10 messages, 1 delayed, 2 dead letters$/m, /^ {2}group billing: 5 pending, lag 0, consumers: billing-1 \(5 pending/m, /^Group billing: 5 pending messages$/m, /^health: ok, Redis PING [\d.]+ ms$/m, /subscription billing\/billing-1: paused \(5 held\)/m],
}

function runExample(name: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', `examples/${name}.ts`],
      // Generous: only an example that never exits is killed, however loaded the machine.
      { cwd: root, env: { ...process.env, EVENT_REDIS_URL: redisUrl() }, timeout: 120_000 },
      (error, stdout, stderr) => resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1, stdout, stderr }),
    )
  })
}

/**
 * Runs `work` on every item, at most `limit` at a time. Ten examples started at
 * once on a 2-core machine starve each other (and the Redis they share); what
 * each prints must not depend on that, but running them two by two keeps the
 * test's own duration reasonable.
 */
async function mapLimited<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length)
  let next = 0
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const index = next++
      results[index] = await work(items[index]!)
    }
  })
  await Promise.all(lanes)
  return results
}

describe('examples', () => {
  it('each runs against Redis with one command, prints what happens, and exits 0 on its own', { timeout: 600_000 }, async () => {
    const names = Object.keys(EXAMPLES)
    const results = await mapLimited(names, 2, runExample)
    names.forEach((name, i) => {
      const { code, stdout, stderr } = results[i]!
      expect({ name, code, stderr }).toEqual({ name, code: 0, stderr: '' })
      for (const line of EXAMPLES[name]!) expect(stdout, `${name}: ${line.source}`).toMatch(line)
    })
  })
})
