// Writes test/durations.json, the per-file durations the test sequencer
// (test/support/sequencer.ts) starts the longest files first by, from a vitest
// JSON report:
//
//   npx vitest run --reporter=json --outputFile.json=/tmp/report.json
//   node scripts/test-durations.mjs /tmp/report.json
//
// Durations are whole seconds (the order is what matters, not the exact value),
// keyed by the file's path from the repository root, sorted by path so that a
// refresh shows as a small diff.
import { readFileSync, writeFileSync } from 'node:fs'
import console from 'node:console'
import process from 'node:process'
import { dirname, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const OUT = resolve(REPO, 'test/durations.json')

const reportPath = process.argv[2]
if (reportPath === undefined) {
  console.error('usage: node scripts/test-durations.mjs <vitest JSON report>')
  process.exit(2)
}
const report = JSON.parse(readFileSync(reportPath, 'utf8'))
const durations = {}
for (const file of report.testResults) {
  const path = relative(REPO, file.name).split('\\').join('/')
  durations[path] = Math.max(1, Math.round((file.endTime - file.startTime) / 1000))
}
const sorted = Object.fromEntries(Object.entries(durations).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
writeFileSync(OUT, `${JSON.stringify(sorted, null, 2)}\n`)
console.log(`${Object.keys(sorted).length} files written to ${relative(process.cwd(), OUT)}`)
