/**
 * The text that replaces a secret.
 *
 * ## Example
 * ```ts
 * import { MASK, redactSecrets } from 'rx-redis-streams'
 * redactSecrets('pw=hunter2', ['hunter2']) === `pw=${MASK}` // true
 * ```
 */
export const MASK = '***'

/**
 * Masks the password of a connection URL, so that it can be logged or shown in
 * an error: `redis://user:secret@host:6379` → `redis://user:***@host:6379`.
 * Works on text that is not a valid URL too.
 *
 * ## Example
 * ```ts
 * import { maskUrl } from 'rx-redis-streams'
 * maskUrl('rediss://app:s3cret@cache.internal:6380/2') // 'rediss://app:***@cache.internal:6380/2'
 * ```
 * @param url a URL, possibly with credentials
 * @returns the same URL with any password replaced by `***`
 */
export function maskUrl(url: string): string {
  // Textual, not `new URL(...).toString()`: it also works on text that does not
  // parse, and keeps the rest exactly as given. The userinfo ends at the last `@`
  // (an unencoded `@` or `/` in a password must not leak the rest of it); when
  // unsure, this masks too much rather than too little.
  const schemeEnd = url.indexOf('://')
  const at = url.lastIndexOf('@')
  if (schemeEnd < 0) {
    // A malformed URL (`redis:/u:pw@h`, `redis//u:pw@h`): whatever stands between
    // the scheme's colon and the last `@` may be a password.
    if (at < 0) return url
    const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/*/.exec(url)?.[0] ?? ''
    return `${url.slice(0, scheme.length)}${MASK}${url.slice(at)}`
  }
  const authorityStart = schemeEnd + 3
  if (at < authorityStart) return url
  const userinfo = url.slice(authorityStart, at)
  const colon = userinfo.indexOf(':')
  if (colon < 0) return url
  return `${url.slice(0, authorityStart)}${userinfo.slice(0, colon)}:${MASK}${url.slice(at)}`
}

/**
 * Replaces every occurrence of each secret (and of its URL-encoded form) in a
 * text by `***`. Empty secrets are ignored.
 *
 * ## Example
 * ```ts
 * import { redactSecrets } from 'rx-redis-streams'
 * redactSecrets('AUTH app s3cret failed', ['s3cret']) // 'AUTH app *** failed'
 * ```
 * @param text any text, such as an error message
 * @param secrets the values to hide
 * @returns the text without any of the secrets
 */
export function redactSecrets(text: string, secrets: readonly (string | undefined)[]): string {
  const forms = new Set<string>()
  for (const secret of secrets) {
    if (secret === undefined || secret.length === 0) continue
    forms.add(secret)
    forms.add(encodeURIComponent(secret))
  }
  let out = text
  // Longest first, so that a secret containing another one is removed whole.
  for (const form of [...forms].sort((a, b) => b.length - a.length)) {
    out = out.split(form).join(MASK)
  }
  return out
}
