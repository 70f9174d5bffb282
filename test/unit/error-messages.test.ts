/** Error texts a user reads in a log must say what happened to their data. */
import { describe, expect, it } from 'vitest'
import { ReplicationTimeoutError } from '../../src/errors.js'

describe('ReplicationTimeoutError', () => {
  it('says the event was appended (a WAIT that is not met does not undo the write) and what is at risk', () => {
    const error = new ReplicationTimeoutError(2, 1, 1_000)
    expect(error.message).toMatch(/appended on the master/)
    expect(error.message).toMatch(/1 of 2 replicas/)
    expect(error.message).toMatch(/1000 ms/)
    expect(error).toMatchObject({ name: 'ReplicationTimeoutError', wanted: 2, acknowledged: 1, timeoutMs: 1_000 })
  })
})
