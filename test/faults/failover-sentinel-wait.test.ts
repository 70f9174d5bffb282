/**
 * Sentinel failover with WAIT (EVENT_PUBLISH_WAIT_REPLICAS): an acknowledged
 * publish has reached that many replicas. With WAIT equal to the number of
 * replicas nothing acknowledged may be missing on the new master, and
 * publishing is acknowledged again only once the failover has given the new
 * master that many replicas (until then each publish is appended and rejects
 * with ReplicationTimeoutError). With WAIT 1, nothing acknowledged is missing
 * after SIGKILL or a 10 s SIGSTOP of the master (the numbers are printed).
 */
import { describe, expect, it } from 'vitest'
import { scenario } from './failover-sentinel-run.js'

describe('Sentinel failover with WAIT', () => {
  it('graceful failover, WAIT 2 (every replica): none missing; appended but ReplicationTimeoutError until the old master has rejoined, then acknowledged again', async () => {
    // Sentinel turns the old master into a replica only after it has reported the wrong role for 8 s, and it
    // then needs a full sync: for those seconds the new master has 1 replica, so WAIT 2 cannot be met.
    const { missing, run, switchedAt, onNew } = await scenario('failover', { waitReplicas: 2, settleMs: 1_000, resumeWithinMs: 40_000 })
    expect(missing).toBe(0)
    const whileOneReplica = run.failures.filter((f) => f.at > switchedAt + 2_000)
    expect(whileOneReplica.length).toBeGreaterThan(0)
    for (const failure of whileOneReplica) {
      expect(failure.name).toBe('ReplicationTimeoutError')
      expect(onNew.has(failure.id)).toBe(true) // the publish itself was appended
    }
  }, 80_000)

  it('SIGSTOP of the master for 10 s, WAIT 1: publishing resumes on the new master, no acknowledged publish is missing', async () => {
    const { missing } = await scenario('sigstop', { waitReplicas: 1 })
    expect(missing).toBe(0)
  }, 60_000)

  it('SIGKILL of the master, WAIT 1: publishing resumes, no acknowledged publish is missing', async () => {
    const { missing } = await scenario('sigkill', { waitReplicas: 1, settleMs: 6_000, resumeWithinMs: 10_000 })
    expect(missing).toBe(0)
  }, 60_000)
})
