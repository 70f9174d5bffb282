/** Profiles one-at-a-time publishing: node --cpu-prof --import tsx bench/profile-publish.ts <url> [count] */
import { publishOneLibrary, publishOneRaw } from './scenarios.js'
const url = process.argv[2] ?? 'redis://127.0.0.1:6379'
const count = Number(process.argv[3] ?? '200000')
if (process.argv[4] === 'raw') console.log(`raw ${Math.round(await publishOneRaw(url, count, 1_000))} msg/s`)
else console.log(`library ${Math.round(await publishOneLibrary(url, count, 1_000))} msg/s`)
