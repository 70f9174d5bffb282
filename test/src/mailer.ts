/**
 * The reader's mailer of the README's "Testing your own handlers" example:
 * test/unit/readme-testing.test.ts imports it as `../src/mailer.js`, verbatim.
 */
import * as t from 'io-ts'

export const UserSignup = t.type({ userId: t.number, email: t.string })

export const outbox: string[] = []

export async function sendWelcomeMail(user: t.TypeOf<typeof UserSignup>): Promise<void> {
  await Promise.resolve()
  if (user.email.endsWith('@invalid')) throw new Error(`cannot mail ${user.email}`)
  outbox.push(user.email)
}
