-- Appends entries to a topic stream, each at most once per event id within a
-- window: the retry-safe publish with one key per event id, for a user whose
-- ACL does not allow what appendOnce-2.lua runs (it answers RRS_KEYS then). A retried (or re-sent) publish whose event id
-- was appended within the window is not appended again; its first stream id is
-- returned instead.
-- KEYS[1]     topic stream
-- KEYS[2…]    one dedupe key per entry, in order (`<prefix>published:{topic}:<event id>`)
-- ARGV[1]     approximate MAXLEN of the stream ("" = unbounded)
-- ARGV[2]     the window in ms (PX of each dedupe key)
-- ARGV[3…]    for each entry: its number of field values n, then the n values
-- Returns: the stream id of each entry (the earlier one for a duplicate).
local ids = {}
local i = 3
local k = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local seen = redis.call('GET', KEYS[k])
  if seen then
    ids[#ids + 1] = seen
  else
    local id
    if ARGV[1] ~= '' then
      id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i + 1, i + n))
    else
      id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + n))
    end
    redis.call('SET', KEYS[k], id, 'PX', ARGV[2])
    ids[#ids + 1] = id
  end
  i = i + n + 1
  k = k + 1
end
return ids
