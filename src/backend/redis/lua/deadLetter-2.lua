-- Moves messages of a consumer group to the topic's dead letter stream, atomically.
-- KEYS[1]  topic stream
-- KEYS[2]  dead letter stream
-- ARGV[1]  group
-- ARGV[2]  failed-at time (ms)
-- ARGV[3]  trim: dead letters with ids below this MINID are removed ("" = no trim)
-- ARGV[4]  number of letters, then for each letter:
--          id, attempts, error, number of original fields (-1 = body gone), fields...
-- Returns: the new dead letter id of each letter, or "" for a letter that was not
--          pending any more (already acked or moved: nothing is written twice).
local group = ARGV[1]
local failedAt = ARGV[2]
local out = {}
local i = 5
for n = 1, tonumber(ARGV[4]) do
  local id = ARGV[i]
  local attempts = ARGV[i + 1]
  local err = ARGV[i + 2]
  local nfields = tonumber(ARGV[i + 3])
  local fields = {}
  if nfields > 0 then
    for f = 1, nfields do fields[f] = ARGV[i + 3 + f] end
    i = i + 4 + nfields
  else
    i = i + 4
  end
  -- Pending? Then write the dead letter first and ack after: a script that fails
  -- midway (a DLQ key of the wrong type) keeps its earlier writes, so acking first
  -- could lose the message.
  if #redis.call('XPENDING', KEYS[1], group, id, id, 1) == 1 then
    local args = {}
    for f = 1, #fields, 2 do
      local name = fields[f]
      if string.sub(name, 1, 4) ~= 'dlq_' and name ~= 'replay_group' then
        args[#args + 1] = name
        args[#args + 1] = fields[f + 1]
      end
    end
    args[#args + 1] = 'dlq_original_id'; args[#args + 1] = id
    args[#args + 1] = 'dlq_group'; args[#args + 1] = group
    args[#args + 1] = 'dlq_error'; args[#args + 1] = err
    args[#args + 1] = 'dlq_attempts'; args[#args + 1] = attempts
    args[#args + 1] = 'dlq_failed_at'; args[#args + 1] = failedAt
    out[n] = redis.call('XADD', KEYS[2], '*', unpack(args))
    redis.call('XACK', KEYS[1], group, id)
  else
    out[n] = ''
  end
end
if ARGV[3] ~= '' then
  redis.call('XTRIM', KEYS[2], 'MINID', ARGV[3])
end
return out
