-- Appends a batch of entries to a topic stream, all or nothing (one script: one
-- command to parse and one reply, cheaper than MULTI or a pipeline of XADDs).
-- KEYS[1]  topic stream
-- ARGV[1]  approximate MAXLEN of the stream ("" = unbounded)
-- ARGV[2…] for each entry: its number of field values n, then the n values (field, value, ...)
-- Returns: the new entry ids, in order.
local ids, m = {}, 0
local stream, maxLen = KEYS[1], ARGV[1]
local i, nargs = 2, #ARGV
if maxLen ~= '' then
  while i <= nargs do
    local n = tonumber(ARGV[i])
    m = m + 1
    ids[m] = redis.call('XADD', stream, 'MAXLEN', '~', maxLen, '*', unpack(ARGV, i + 1, i + n))
    i = i + n + 1
  end
else
  while i <= nargs do
    local n = tonumber(ARGV[i])
    m = m + 1
    ids[m] = redis.call('XADD', stream, '*', unpack(ARGV, i + 1, i + n))
    i = i + n + 1
  end
end
return ids
