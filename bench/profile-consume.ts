/**
 * Profiles the library's consume path alone:
 *   npx tsx bench/profile-consume.ts fill <url> <count>          # prints a topic
 *   node --cpu-prof --import tsx bench/profile-consume.ts drain <url> <topic> <count> [concurrency]
 */
import { consumeLibrary, consumeRaw, prefill } from './scenarios.js'
const [verb, url = 'redis://127.0.0.1:6379', a = '100000', b = '100000', c = '100'] = process.argv.slice(2)
if (verb === 'fill') console.log(await prefill(url, Number(a)))
else if (verb === 'raw') console.log(`raw ${Math.round(await consumeRaw(url, a, Number(b), 100))} msg/s`)
else console.log(`library ${Math.round(await consumeLibrary(url, a, Number(b), 100, Number(c)))} msg/s`)
