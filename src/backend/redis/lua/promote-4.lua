-- Moves delayed events that are due to the topic stream, in order of due time.
-- Atomic, so any number of processes may run it at once: each event is appended once.
-- KEYS[1]  delayed sorted set (member = event id, score = due time in ms)
-- KEYS[2]  delayed data hash (event id -> JSON array of stream fields)
-- KEYS[3]  topic stream
-- KEYS[4]  dead letter stream: data that cannot be decoded goes there (dlq_delayed_id,
--          dlq_delayed_data, dlq_error, dlq_failed_at), so that it never blocks the queue
-- ARGV[1]  now (ms)
-- ARGV[2]  most events to move
-- ARGV[3]  approximate MAXLEN of the topic stream ("" = unbounded)
-- Returns: { number promoted, due time of the earliest event left or false, number dead-lettered }
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local promoted = 0
local broken = 0
for _, member in ipairs(due) do
  local data = redis.call('HGET', KEYS[2], member)
  if data then
    local ok, fields = pcall(cjson.decode, data)
    local valid = ok and type(fields) == 'table' and #fields > 0 and #fields % 2 == 0
    if valid then
      for _, f in ipairs(fields) do
        if type(f) ~= 'string' then valid = false end
      end
    end
    if valid then
      if ARGV[3] ~= '' then
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
      else
        redis.call('XADD', KEYS[3], '*', unpack(fields))
      end
      promoted = promoted + 1
    else
      redis.call('XADD', KEYS[4], '*', 'dlq_delayed_id', member, 'dlq_delayed_data', data,
        'dlq_error', 'malformed_delayed_entry: the stored fields are not a JSON array of strings', 'dlq_failed_at', ARGV[1])
      broken = broken + 1
    end
  end
  redis.call('ZREM', KEYS[1], member)
  redis.call('HDEL', KEYS[2], member)
end
local nextDue = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nextDue == 0 then return { promoted, false, broken } end
return { promoted, nextDue[2], broken }
