// The README's "Testing your own handlers" example, verbatim below this comment
// but for the package's own name, which in this checkout is its sources
// (test/unit/testing.test.ts checks that it still is; scripts/check-package.sh
// runs the README's text as is against the packed package): two tests, one
// manager each.
import { afterEach, expect, it } from 'vitest'
import { newEvent } from '../../src/index.js'
import { typedHandler } from '../../operators/index.js'
import { closeTestEventManagers, createTestEventManager, waitForDrained } from '../../src/testing.js'
import { sendWelcomeMail, UserSignup } from '../src/mailer.js'

afterEach(closeTestEventManagers) // closes every manager the test made

it('mails new users', async () => {
  const events = createTestEventManager()
  events.subscribe('user-events', 'mailer', typedHandler(UserSignup, sendWelcomeMail))
  await events.publish('user-events', newEvent('user.signup', { userId: 1, email: 'ada@example.com' }))
  await waitForDrained(events, 'user-events', 'mailer')
  expect(await events.deadLetters.count('user-events')).toBe(0)
})

it('dead-letters what it cannot mail', async () => {
  const events = createTestEventManager({ maxRetries: 1 })
  events.subscribe('user-events', 'mailer', typedHandler(UserSignup, sendWelcomeMail))
  await events.publish('user-events', newEvent('user.signup', { userId: 2, email: 'nobody@invalid' }))
  await waitForDrained(events, 'user-events', 'mailer')
  const [letter] = await events.deadLetters.list('user-events')
  expect(letter).toMatchObject({ group: 'mailer', event: { payload: { userId: 2 } } })
})
