/**
 * Sentinel failover (1 master, 2 replicas, 3 sentinels, the harness's own
 * servers) without WAIT: publishing follows the switch and resumes; what the
 * old master took after the switch is lost (printed, not asserted: that is
 * what EVENT_PUBLISH_WAIT_REPLICAS reduces).
 */
import { describe, it } from 'vitest'
import { scenario } from './failover-sentinel-run.js'

describe('Sentinel failover', () => {
  it('graceful SENTINEL FAILOVER: publishing follows the switch', async () => {
    await scenario('failover')
  }, 60_000)

  it('SIGKILL of the master: publishing resumes on the promoted replica', async () => {
    // A killed master is found dead only after down-after-milliseconds, then the reconnection backoff (up to 2 s) runs.
    await scenario('sigkill', 0, 6_000)
  }, 60_000)

  it('SIGSTOP of the master for 10 s: publishing resumes on the new master', async () => {
    await scenario('sigstop')
  }, 60_000)
})
