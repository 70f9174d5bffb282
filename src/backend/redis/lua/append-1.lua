-- Appends a batch of entries to a topic stream, all or nothing (one script: one
-- command to parse and one reply, cheaper than MULTI or a pipeline of XADDs).
-- KEYS[1]  topic stream
-- ARGV[1]  approximate MAXLEN of the stream ("" = unbounded)
-- ARGV[2…] for each entry: its number of field values n, then the n values (field, value, ...); or all of them
--          in ARGV[2] alone, joined by "\0" (packed: one argument to send and parse instead of thousands)
-- Returns: the new entry ids, in order.
local A, i = ARGV, 2
if #ARGV == 2 then
  -- Packed (an unpacked entry takes at least three arguments): split at each "\0".
  local s, n, pos = ARGV[2], 0, 1
  A, i = {}, 1
  while true do
    local e = string.find(s, '\0', pos, true)
    n = n + 1
    if not e then A[n] = string.sub(s, pos) break end
    A[n] = string.sub(s, pos, e - 1)
    pos = e + 1
  end
end
local ids, m = {}, 0
local stream, maxLen = KEYS[1], ARGV[1]
local nargs = #A
if maxLen ~= '' then
  while i <= nargs do
    local n = tonumber(A[i])
    m = m + 1
    ids[m] = redis.call('XADD', stream, 'MAXLEN', '~', maxLen, '*', unpack(A, i + 1, i + n))
    i = i + n + 1
  end
else
  while i <= nargs do
    local n = tonumber(A[i])
    m = m + 1
    ids[m] = redis.call('XADD', stream, '*', unpack(A, i + 1, i + n))
    i = i + n + 1
  end
end
return ids
