import { describe, expect, it } from 'vitest'
import { MemoryBackend } from '../../src/backend/memory/index.js'
import { collectStats, encodeEvent, newEvent, toSpecShape, topicStats } from '../../src/index.js'

const fields = (name: string): string[] => encodeEvent(newEvent(name, {}), 1_000_000)

describe('collectStats on the memory backend', () => {
  it('reports a known state: length, ids, delayed, dead letters, pending, lag and consumers', async () => {
    const backend = new MemoryBackend()
    const ids = await backend.append('orders', Array.from({ length: 10 }, () => fields('order.created')))
    await backend.schedule('orders', [{ eventId: 'later', dueAt: Date.now() + 3_600_000, fields: fields('order.reminder') }])
    await backend.ensureGroup('orders', 'billing', 'beginning')
    const reader = backend.createReader()
    const read = await reader.read('orders', 'billing', 'c1', { count: 5, blockMs: 0, from: 'new' })
    await backend.ack('orders', 'billing', read.slice(0, 3).map((e) => e.id))
    await backend.deadLetter('orders', 'billing', read.slice(3).map((e) => ({ id: e.id, fields: e.fields, error: 'declined', attempts: 1 })), 0)
    await reader.read('orders', 'billing', 'c1', { count: 2, blockMs: 0, from: 'new' })
    await reader.close()

    const stats = await collectStats(backend)
    expect(Object.keys(stats.topics)).toEqual(['orders'])
    expect(stats.topics['orders']).toEqual({ name: 'orders', length: 10, firstId: ids[0], lastId: ids[9], delayed: 1, deadLetters: 2, groups: expect.any(Object) as object })
    expect(stats.topics['orders']?.groups['billing']).toMatchObject({ pending: 2, lag: 3, lost: 0, lastDeliveredId: ids[6] })
    expect(Object.keys(stats.topics['orders']?.groups['billing'] ?? {}).sort()).toEqual(['consumers', 'lag', 'lastDeliveredId', 'lost', 'name', 'pending', 'topic'])
    expect(stats.topics['orders']?.groups['billing']?.consumers).toMatchObject([{ name: 'c1', pending: 2 }])
    expect(stats.consumerGroups['billing']).toEqual({ name: 'billing', topics: ['orders'], pending: 2, lag: 3, lost: 0, consumers: 1 })
    // The original spec's shape comes from one accessor only.
    expect(toSpecShape(stats)).toEqual({
      topics: { orders: { messagesCount: 10, delayedCount: 1, deadLetterCount: 2 } },
      consumerGroups: { billing: { pendingMessagesCount: 2, lag: 3, consumersCount: 1 } },
    })
    expect(stats.collectedAt).toBeLessThanOrEqual(Date.now())
    await backend.close()
  })

  it('sums a group over topics, and reports an unknown lag as null', async () => {
    const backend = new MemoryBackend()
    for (const topic of ['a', 'b']) {
      await backend.append(topic, [fields('x'), fields('y')])
      await backend.ensureGroup(topic, 'g', 'beginning')
    }
    const stats = await collectStats(backend)
    expect(stats.consumerGroups['g']).toMatchObject({ topics: ['a', 'b'], pending: 0, lag: 4 })

    // Redis reports no lag after deletions in the stream.
    const unknownLag = new Proxy(backend, {
      get: (target, property) => {
        if (property === 'groups') return () => Promise.resolve([{ name: 'g', consumers: 0, pending: 1, lastDeliveredId: '0-0', lag: null }])
        const value: unknown = Reflect.get(target, property)
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value
      },
    })
    const t = await topicStats(unknownLag, 'a')
    expect(t.groups['g']?.lag).toBeNull()
    await backend.close()
  })

  it('keeps topic and group names such as __proto__ as plain keys', async () => {
    const backend = new MemoryBackend()
    await backend.append('__proto__', [fields('x')])
    await backend.ensureGroup('__proto__', 'constructor', 'beginning')
    const stats = await collectStats(backend)
    expect(Object.keys(stats.topics)).toEqual(['__proto__'])
    expect(stats.topics['__proto__']?.length).toBe(1)
    expect(Object.keys(stats.consumerGroups)).toEqual(['constructor'])
    expect(({} as Record<string, unknown>)['length']).toBeUndefined()
    await backend.close()
  })

  it('refuses an invalid topic name', async () => {
    await expect(collectStats(new MemoryBackend(), { topic: 'no spaces' })).rejects.toMatchObject({ code: 'INVALID_TOPIC' })
  })
})
