-- Appends a batch of entries to a topic stream, all or nothing (one script: one
-- command to parse and one reply, cheaper than MULTI or a pipeline of XADDs).
-- KEYS[1]  topic stream
-- ARGV[1]  approximate MAXLEN of the stream ("" = unbounded)
-- ARGV[2…] for each entry: its number of field values n, then the n values (field, value, ...)
-- Returns: the new entry ids, in order.
local ids = {}
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if ARGV[1] ~= '' then
    ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i + 1, i + n))
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + n))
  end
  i = i + n + 1
end
return ids
