-- Appends entries to a topic stream, each at most once per event id within a
-- window: the retry-safe publish. A retried (or re-sent) publish whose event id
-- was appended within the window is not appended again; its first stream id is
-- returned instead.
--
-- The event ids appended are remembered in one hash per time bucket of the
-- window (bucket b = floor(server time in ms / window), field = event id,
-- value = stream id): an id appended at time t is in bucket floor(t / W), so
-- any time up to t + W looks it up in the current or the previous bucket: an
-- id is remembered for at least W and less than 2 W. A call UNLINKs the
-- bucket before the previous one (a large hash is freed off the
-- main thread); PEXPIREAT one bucket later is the safety net for a topic that
-- went quiet.
-- Up to one window after an upgrade, ids remembered by the earlier layout (one
-- string key per id, `<legacy prefix><event id>`) are looked up too.
-- The buckets are named under the earlier layout's key pattern (`<prefix>published:*`), so an ACL written for it
-- covers their keys. A user whose ACL does not allow every command below is answered `RRS_KEYS` (checked with
-- redis.acl_check_cmd, Redis ≥ 7, nothing run, no ACL LOG entry): the caller then uses appendOnceKeys-n.lua.
-- On older servers every command outside that earlier script's set runs before the first XADD: a NOPERM
-- reply leaves nothing appended.
-- KEYS[1]  topic stream
-- KEYS[2]  the buckets' base name (`<prefix>published:{topic}`; a bucket is `<base>::<window>:<b>`)
-- ARGV[1]  approximate MAXLEN of the stream ("" = unbounded)
-- ARGV[2]  the window W in ms (an integer ≥ 1)
-- ARGV[3]  the legacy key prefix (`<prefix>published:{topic}:`), or "" to skip that lookup
-- ARGV[4…] for each entry: its event id ("" when its first field is `id`: then that field's value is the event id),
--          its number of field values n, then the n values; or all of them in ARGV[4] alone, joined by "\0"
--          (packed: one argument to send and parse instead of thousands)
-- Returns: the stream id of each entry (the earlier one for a duplicate).
local w = tonumber(ARGV[2])
local base = KEYS[2] .. '::' .. ARGV[2] .. ':'
local legacy = ARGV[3]
if redis.acl_check_cmd then
  local probe = base .. '0'
  if not (redis.acl_check_cmd('TIME') and redis.acl_check_cmd('HMGET', probe, 'x') and redis.acl_check_cmd('EXISTS', probe)
      and redis.acl_check_cmd('HSET', probe, 'x', 'y') and redis.acl_check_cmd('PEXPIREAT', probe, '1') and redis.acl_check_cmd('UNLINK', probe)
      and (legacy == '' or redis.acl_check_cmd('MGET', legacy .. 'x'))) then
    return redis.status_reply('RRS_KEYS')
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = math.floor(now / w)
local cur = base .. string.format('%.0f', b)
local prev = base .. string.format('%.0f', b - 1)
-- The bucket before the previous one is no longer looked up: freed off the main thread (before any XADD, see above).
redis.call('UNLINK', base .. string.format('%.0f', b - 2))
if not redis.acl_check_cmd then redis.call('PEXPIREAT', cur, string.format('%.0f', (b + 3) * w)) end -- the ACL, before any XADD

-- The entries' arguments: ARGV from 4, or the packed ARGV[4] split at each "\0" (an unpacked entry takes at least
-- four arguments).
local A, i = ARGV, 4
if #ARGV == 4 then
  local s, n, pos = ARGV[4], 0, 1
  A, i = {}, 1
  while true do
    local e = string.find(s, '\0', pos, true)
    n = n + 1
    if not e then A[n] = string.sub(s, pos) break end
    A[n] = string.sub(s, pos, e - 1)
    pos = e + 1
  end
end

-- The event ids and where each entry's fields start (no per-entry table but these two: a script's cost is per entry).
local ids, starts = {}, {}
local m = 0
local nargs = #A
while i <= nargs do
  local id = A[i]
  if id == '' and A[i + 2] == 'id' then id = A[i + 3] end
  m = m + 1
  ids[m] = id
  starts[m] = i + 1
  i = i + tonumber(A[i + 1]) + 2
end

-- Looks the ids up in `key` (HMGET, or MGET of the legacy keys), in chunks (unpack has a limit), into `seen`.
local CHUNK = 1000
local function lookup(seen, key, isLegacy)
  for from = 1, m, CHUNK do
    local to = math.min(m, from + CHUNK - 1)
    local found
    if isLegacy then
      local names = {}
      for j = from, to do names[j - from + 1] = legacy .. ids[j] end
      found = redis.call('MGET', unpack(names))
    else
      found = redis.call('HMGET', key, unpack(ids, from, to))
    end
    for j = from, to do
      local v = found[j - from + 1]
      if v and seen[j] == nil then seen[j] = v end
    end
  end
end

local seen = {}
lookup(seen, cur, false)
if redis.call('EXISTS', prev) == 1 then lookup(seen, prev, false) end
-- A bucket after the current one exists only when the server's clock stepped back (or a failover reached a node whose
-- clock is behind): the ids in it were appended less than a window ago by that clock, so they are looked up too.
local nxt = base .. string.format('%.0f', b + 1)
if redis.call('EXISTS', nxt) == 1 then lookup(seen, nxt, false) end
if legacy ~= '' then lookup(seen, nil, true) end

-- `seen` becomes the reply (a duplicate keeps its earlier stream id); `fresh` the HSET arguments (event id, stream id).
local stream, maxLen = KEYS[1], ARGV[1]
local byId, fresh, f = nil, {}, 0
for j = 1, m do
  local id = ids[j]
  if seen[j] == nil then
    local known = byId and byId[id]
    if known then
      seen[j] = known
    else
      local s = starts[j]
      local sid
      if maxLen ~= '' then
        sid = redis.call('XADD', stream, 'MAXLEN', '~', maxLen, '*', unpack(A, s + 1, s + tonumber(A[s])))
      else
        sid = redis.call('XADD', stream, '*', unpack(A, s + 1, s + tonumber(A[s])))
      end
      seen[j] = sid
      -- The same id again later in this call (a retry coalesced with its first try) is not appended twice.
      if j < m then
        byId = byId or {}
        byId[id] = sid
      end
      fresh[f + 1] = id
      fresh[f + 2] = sid
      f = f + 2
    end
  end
end

for from = 1, f, 2 * CHUNK do
  redis.call('HSET', cur, unpack(fresh, from, math.min(f, from + 2 * CHUNK - 1)))
end
if f > 0 then redis.call('PEXPIREAT', cur, string.format('%.0f', (b + 3) * w)) end
return seen
