import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { safeJsonParse } from '../../src/event.js'

/**
 * safeJsonParse skips the key scrub when the text cannot hold an unsafe key
 * (no `"__proto__":` / `"constructor":` spelled out, no `\u` escape). These
 * properties check that the fast path and the always-scrubbing reference agree,
 * on texts that hide the keys behind `\u` escapes and whitespace too.
 */

/** An object as its entries: keeps `__proto__` and repeated keys, which a literal could not. */
class Obj {
  constructor(readonly entries: readonly (readonly [string, Tree])[]) {}
}
type Tree = null | boolean | number | string | readonly Tree[] | Obj

const key = fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'a', 'proto', 'constructo'), fc.string({ maxLength: 4 }))
const { tree } = fc.letrec<{ tree: Tree }>((tie) => ({
  tree: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.oneof(fc.constant(null), fc.boolean(), fc.integer(), fc.string({ maxLength: 3 })),
    fc.array(tie('tree'), { maxLength: 3 }),
    fc.array(fc.tuple(key, tie('tree')), { maxLength: 4 }).map((entries) => new Obj(entries)),
  ),
}))

/** JSON text of a tree; `escape` picks the key characters written as `\uXXXX` and where whitespace goes. */
function serialize(node: Tree, escape: number): string {
  if (node instanceof Obj) {
    const parts = node.entries.map(([k, v], n) => {
      let quoted = '"'
      for (let i = 0; i < k.length; i++) {
        const c = k.charCodeAt(i)
        quoted += ((escape >>> ((i + n) % 31)) & 1) === 1 ? `\\u${c.toString(16).padStart(4, '0')}` : JSON.stringify(k[i]).slice(1, -1)
      }
      quoted += '"'
      const gap = ((escape >>> (n % 29)) & 3) === 3 ? ' \n\t' : ''
      return `${quoted}${gap}:${gap}${serialize(v, escape >>> 1)}`
    })
    return `{${parts.join(',')}}`
  }
  if (Array.isArray(node)) return `[${(node as readonly Tree[]).map((v) => serialize(v, escape >>> 2)).join(',')}]`
  return JSON.stringify(node)
}

/** The slow path, always: `__proto__` keys, and `constructor` keys holding a `prototype`, dropped at any depth. */
const reference = (text: string): unknown =>
  JSON.parse(text, function (k: string, v: unknown) {
    if (k === '__proto__') return undefined
    if (k === 'constructor' && v !== null && typeof v === 'object' && Object.hasOwn(v, 'prototype')) return undefined
    return v
  })

/** Whether a parsed value has an own `__proto__` key anywhere. */
function hasOwnProto(value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false
  if (Object.hasOwn(value, '__proto__')) return true
  return Object.values(value).some(hasOwnProto)
}

describe('safeJsonParse: fast path and scrubbing path agree', () => {
  it('gives what the always-scrubbing reference gives, for texts with hostile keys, escaped keys and whitespace', () => {
    fc.assert(
      fc.property(tree, fc.integer({ min: 0, max: 0x7fffffff }), (node, escape) => {
        const text = serialize(node, escape)
        const parsed = safeJsonParse(text, { maxDepth: 64 })
        expect(JSON.stringify(parsed)).toBe(JSON.stringify(reference(text)))
        expect(hasOwnProto(parsed)).toBe(false)
      }),
      { numRuns: 2_000 },
    )
  })

  it('returns exactly JSON.parse for texts that take the fast path (no unsafe key, no escape)', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (value) => {
        const text = JSON.stringify(value)
        fc.pre(!text.includes('\\u') && !/"(?:__proto__|constructor)"/.test(text))
        expect(safeJsonParse(text)).toStrictEqual(JSON.parse(text))
      }),
    )
  })

  it('scrubs a __proto__ key written with escapes or spaced from its colon', () => {
    expect(hasOwnProto(safeJsonParse('{"\\u005f_proto__":{"x":1},"a":1}'))).toBe(false)
    expect(safeJsonParse('{"\\u005f_proto__":{"x":1},"a":1}')).toEqual({ a: 1 })
    expect(safeJsonParse('{"__proto__" \n :{"x":1},"a":1}')).toEqual({ a: 1 })
    expect(safeJsonParse('{"c\\u006fnstructor":{"prototype":{"x":1}},"a":1}')).toEqual({ a: 1 })
  })
})
