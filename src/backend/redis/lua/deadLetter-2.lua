-- Moves messages of a consumer group to the topic's dead letter stream, atomically.
-- The entry is copied server-side from the topic stream by its id, so a large
-- entry crosses the network once (when it was read), never back as arguments.
-- KEYS[1]  topic stream
-- KEYS[2]  dead letter stream
-- ARGV[1]  group
-- ARGV[2]  failed-at time (ms)
-- ARGV[3]  trim: dead letters with ids below this MINID are removed ("" = no trim)
-- ARGV[4]  number of letters, then 7 values for each letter:
--          id, deliveries, error, handler runs ("" = unknown), error class, stack, consumer
-- Returns: the new dead letter id of each letter, or "" for a letter that was not
--          pending any more (already acked or moved: nothing is written twice).
-- An entry with more than 7,000 field values (Lua cannot spread about 8,000 into
-- one XADD: "too many results to unpack") is stored as one field, `dlq_fields`,
-- holding the JSON array of its field values.
local WIDE = 7000
local group = ARGV[1]
local failedAt = ARGV[2]
local out = {}
local i = 5
for n = 1, tonumber(ARGV[4]) do
  local id = ARGV[i]
  local deliveries = ARGV[i + 1]
  local err = ARGV[i + 2]
  local runs = ARGV[i + 3]
  local errorClass = ARGV[i + 4]
  local stack = ARGV[i + 5]
  local consumer = ARGV[i + 6]
  i = i + 7
  -- Pending? Then write the dead letter first and ack after: a script that fails
  -- midway (a DLQ key of the wrong type) keeps its earlier writes, so acking first
  -- could lose the message.
  if #redis.call('XPENDING', KEYS[1], group, id, id, 1) == 1 then
    local args = {}
    local found = redis.call('XRANGE', KEYS[1], id, id)
    if #found == 1 then
      local fields = found[1][2]
      if #fields > WIDE then
        args[1] = 'dlq_fields'
        args[2] = cjson.encode(fields)
      else
        for f = 1, #fields, 2 do
          local name = fields[f]
          if string.sub(name, 1, 4) ~= 'dlq_' and name ~= 'replay_group' then
            args[#args + 1] = name
            args[#args + 1] = fields[f + 1]
          end
        end
      end
    end
    args[#args + 1] = 'dlq_original_id'; args[#args + 1] = id
    args[#args + 1] = 'dlq_group'; args[#args + 1] = group
    args[#args + 1] = 'dlq_error'; args[#args + 1] = err
    args[#args + 1] = 'dlq_attempts'; args[#args + 1] = deliveries
    args[#args + 1] = 'dlq_deliveries'; args[#args + 1] = deliveries
    if runs ~= '' then args[#args + 1] = 'dlq_handler_runs'; args[#args + 1] = runs end
    if errorClass ~= '' then args[#args + 1] = 'dlq_error_class'; args[#args + 1] = errorClass end
    if stack ~= '' then args[#args + 1] = 'dlq_stack'; args[#args + 1] = stack end
    if consumer ~= '' then args[#args + 1] = 'dlq_consumer'; args[#args + 1] = consumer end
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
