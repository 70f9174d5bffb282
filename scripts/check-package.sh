#!/usr/bin/env bash
# Checks the package a user would install, not the checkout:
#   1. npm pack (prepack builds dist/), and the tarball holds what it must (LICENSE,
#      the compiled entry points and Lua scripts) and nothing it must not (maps, tests),
#      and no doc comment cites a file the package does not ship;
#   2. installs the tarball into a scratch ESM project in a temp dir (dependencies from
#      the npm registry or its local cache, nothing else);
#   3. type-checks a file importing rx-redis-streams, /operators and /testing under
#      strict + moduleResolution nodenext, compiles it and runs it: one event published
#      and consumed on a private redis-server on a free port (never 6379), and one
#      through the in-memory test manager;
#   4. runs `npx rx-redis-streams --help` and `stats --json` against that Redis;
#   5. type-checks every TypeScript block of README.md against the installed package,
#      and runs the README's "Testing your own handlers" example as is with vitest.
#
#   npm run check:package          (KEEP_SCRATCH=1 keeps the temp dir for a look)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/rx-redis-streams-package.XXXXXX")"
redis_pid=""

cleanup() {
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  if [ "${KEEP_SCRATCH:-}" = "1" ]; then echo "scratch project kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'package check FAILED: %s\n' "$*" >&2; exit 1; }

# The versions the repository itself is tested with.
version_of() { node -e 'const p = require(process.argv[1]); const n = process.argv[2]; console.log((p.devDependencies ?? {})[n] ?? (p.dependencies ?? {})[n])' "$repo/package.json" "$1"; }

step "npm pack (prepack builds dist/)"
(cd "$repo" && npm pack --pack-destination "$work" --loglevel=warn >"$work/pack.log" 2>&1) || { cat "$work/pack.log"; fail "npm pack"; }
tarball="$(ls "$work"/rx-redis-streams-*.tgz)"
echo "packed $(basename "$tarball") ($(du -k "$tarball" | cut -f1) KiB)"

step "tarball contents"
tar -tzf "$tarball" | sed 's|^package/||' | sort >"$work/contents.txt"
for required in LICENSE README.md package.json dist/src/index.js dist/src/index.d.ts dist/operators/index.js dist/operators/index.d.ts dist/src/testing.js dist/src/testing.d.ts dist/src/cli/main.js; do
  grep -qx "$required" "$work/contents.txt" || fail "the tarball lacks $required"
done
grep -q '^dist/src/backend/redis/lua/.*\.lua$' "$work/contents.txt" || fail "the tarball lacks the Lua scripts"
if grep -E '\.map$|^(src|test|examples|bench|scripts)/' "$work/contents.txt"; then fail "the tarball ships files it must not (above)"; fi
# A .d.ts or .js must not point at a source map or source file that is not shipped.
if tar -xzOf "$tarball" --wildcards 'package/dist/*' | grep -n 'sourceMappingURL'; then fail "compiled files reference source maps"; fi
echo "$(wc -l <"$work/contents.txt") files: LICENSE, dist/src, dist/operators, Lua scripts; no maps, no sources"

step "doc comments cite only what is shipped"
mkdir -p "$work/extracted" && tar -xzf "$tarball" -C "$work/extracted"
# Design notes, tests, benchmarks, examples, scripts and .ts sources are not in the package.
if grep -rnoE '\b(DESIGN|STYLE)\.md\b|\b(test|bench|examples|scripts)/[A-Za-z0-9_./-]+|\b(src|operators)/[A-Za-z0-9_./-]+\.ts\b' "$work/extracted/package/dist" \
  | sed "s|$work/extracted/package/||"; then
  fail "the compiled files cite files the package does not ship (above; point to the README instead)"
fi
echo "no citation of unshipped files"

step "scratch ESM project: npm install of the tarball"
app="$work/app"
mkdir -p "$app/src"
cat >"$app/package.json" <<'JSON'
{ "name": "package-check", "private": true, "type": "module" }
JSON
(cd "$app" && npm install --no-audit --no-fund --prefer-offline --loglevel=warn \
  "$tarball" "rxjs@$(version_of rxjs)" "io-ts@$(version_of io-ts)" \
  "typescript@$(version_of typescript)" "@types/node@$(version_of @types/node)" "vitest@$(version_of vitest)") || fail "npm install of the tarball"

cat >"$app/tsconfig.json" <<'JSON'
{
  "compilerOptions": {
    "target": "ES2022",
    "module": "NodeNext",
    "moduleResolution": "NodeNext",
    "lib": ["ES2023"],
    "types": ["node"],
    "strict": true,
    "noUncheckedIndexedAccess": true,
    "exactOptionalPropertyTypes": true,
    "verbatimModuleSyntax": true,
    "skipLibCheck": false,
    "outDir": "out",
    "rootDir": "src"
  },
  "include": ["src"]
}
JSON

cat >"$app/src/check.ts" <<'TS'
// A user's first program: the three entry points, typed, against a real Redis and in memory.
import { randomBytes } from 'node:crypto'
import { firstValueFrom, take } from 'rxjs'
import * as t from 'io-ts'
import { createEventManager, newEvent, type EventManager, type Message } from 'rx-redis-streams'
import { decode, handleEach, matchPattern } from 'rx-redis-streams/operators'
import { createTestEventManager, waitForDrained } from 'rx-redis-streams/testing'

const Signup = t.type({ userId: t.number, email: t.string })
const topic = `package-check-${randomBytes(4).toString('hex')}`

async function roundTrip(events: EventManager): Promise<Message<{ userId: number; email: string }>> {
  const received = firstValueFrom(events.topic(topic).consume({ group: 'check' }).pipe(matchPattern({ eventName: 'user.*' }), decode(Signup), take(1)))
  await events.publish(topic, newEvent('user.signup', { userId: 1, email: 'ada@example.com' }))
  const message = await received
  await message.ack()
  return message
}

const redisUrl = process.env['EVENT_REDIS_URL']
if (redisUrl === undefined) throw new Error('EVENT_REDIS_URL is not set')
const events = createEventManager({ redisUrl })
const message = await roundTrip(events)
console.log(`redis: consumed ${message.event.name} for user ${message.event.payload.userId} (${message.streamId})`)
await events.close()

const test = createTestEventManager()
const seen: string[] = []
const handled = test.topic(topic).consume({ group: 'mailer' }).pipe(handleEach((msg) => void seen.push(msg.event.name))).subscribe()
await test.publish(topic, newEvent('user.signup', { userId: 2, email: 'grace@example.com' }))
await waitForDrained(test, topic, 'mailer', { timeoutMs: 5_000 })
handled.unsubscribe()
await test.close()
console.log(`memory: handled ${seen.join(', ')}`)
TS

step "type-check and compile src/check.ts (strict, nodenext, skipLibCheck off)"
(cd "$app" && npx tsc -p tsconfig.json) || fail "the package does not type-check for a strict nodenext user"

step "private redis-server on a free port"
port="$(node -e 'const s = require("node:net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close() })')"
[ "$port" != "6379" ] || fail "got port 6379"
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --protected-mode yes >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
  if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then break; fi
  kill -0 "$redis_pid" 2>/dev/null || { cat "$work/redis.log"; fail "redis-server did not start"; }
  sleep 0.1
done
export EVENT_REDIS_URL="redis://127.0.0.1:$port"
echo "redis-server (pid $redis_pid) on 127.0.0.1:$port"

step "run it"
(cd "$app" && node out/check.js) || fail "publish and consume with the installed package"

step "npx rx-redis-streams"
(cd "$app" && npx --no-install rx-redis-streams --help) >"$work/help.txt" || fail "npx rx-redis-streams --help"
head -3 "$work/help.txt"
grep -q '^Usage: rx-redis-streams' "$work/help.txt" || fail "--help printed no usage"
(cd "$app" && npx --no-install rx-redis-streams stats --json) >"$work/stats.json" || fail "npx rx-redis-streams stats --json"
node -e 'const s = JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8")); if (Object.keys(s.topics).length !== 1) throw new Error("expected one topic in " + JSON.stringify(s))' "$work/stats.json" \
  || fail "stats --json did not list the topic the check published to"
echo "stats --json lists the checked topic"

step "README TypeScript blocks against the installed package"
# Its failures are reported at the end, after the remaining steps ran.
readme_ok=1
node "$repo/scripts/check-readme.mjs" --root "$app" --readme "$repo/README.md" || readme_ok=0

step "the README's testing example, as is, with vitest"
mkdir -p "$app/test"
cp "$repo/test/src/mailer.ts" "$app/src/mailer.ts"
node -e '
  const readme = require("node:fs").readFileSync(process.argv[1], "utf8")
  const section = readme.slice(readme.indexOf("## Testing your own handlers"))
  const block = [...section.matchAll(/```ts\n([\s\S]*?)\n```/g)].map((m) => m[1]).find((b) => b.includes("afterEach(closeTestEventManagers)"))
  if (block === undefined) throw new Error("no example with afterEach(closeTestEventManagers) under ## Testing your own handlers")
  process.stdout.write(block + "\n")
' "$repo/README.md" >"$app/test/readme.test.ts"
(cd "$app" && npx --no-install vitest run --reporter=dot test/readme.test.ts) || fail "the README's testing example fails against the package"

[ "$readme_ok" = 1 ] || fail "README blocks do not type-check against the package (see above)"
printf '\npackage check passed\n'
