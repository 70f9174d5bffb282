-- Moves delayed events that are due to the topic stream, in id order of due time.
-- Atomic, so any number of processes may run it at once: each event is appended once.
-- KEYS[1]  delayed sorted set (member = event id, score = due time in ms)
-- KEYS[2]  delayed data hash (event id -> JSON array of stream fields)
-- KEYS[3]  topic stream
-- ARGV[1]  now (ms)
-- ARGV[2]  most events to move
-- ARGV[3]  approximate MAXLEN of the topic stream ("" = unbounded)
-- Returns: { number promoted, due time of the earliest event left or false }
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local promoted = 0
for _, member in ipairs(due) do
  local data = redis.call('HGET', KEYS[2], member)
  if data then
    local fields = cjson.decode(data)
    if ARGV[3] ~= '' then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
    else
      redis.call('XADD', KEYS[3], '*', unpack(fields))
    end
    promoted = promoted + 1
  end
  redis.call('ZREM', KEYS[1], member)
  redis.call('HDEL', KEYS[2], member)
end
local nextDue = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nextDue == 0 then return { promoted, false } end
return { promoted, nextDue[2] }
