/**
 * Drains a pre-filled topic in a process of its own and prints its peak RSS:
 *   node --import tsx bench/rss-child.ts <raw|library> <url>|<topic> <count>
 */
import { consumeLibrary, consumeRaw } from './scenarios.js'

const [mode, target, countText] = process.argv.slice(2)
const [url, topic] = (target ?? '').split('|')
const count = Number(countText)
if (url === undefined || topic === undefined || !Number.isFinite(count)) throw new Error('usage: rss-child <raw|library> <url>|<topic> <count>')

const mib = (bytes: number): number => bytes / 1024 / 1024
const baselineMiB = mib(process.memoryUsage.rss())
const rate = mode === 'raw' ? await consumeRaw(url, topic, count, 100) : await consumeLibrary(url, topic, count, 100, 100)
// maxRSS is in KiB.
const maxRssMiB = process.resourceUsage().maxRSS / 1024
console.log(JSON.stringify({ rate, maxRssMiB, baselineMiB }))
