-- Replays one dead letter: appends its event back to the topic stream, targeted
-- at the group that failed it, and deletes it from the dead letter stream.
-- KEYS[1]  topic stream
-- KEYS[2]  dead letter stream
-- ARGV[1]  dead letter id
-- ARGV[2]  approximate MAXLEN of the topic stream ("" = unbounded)
-- Returns: the new stream id, or false when the dead letter does not exist or holds
--          no event fields (malformed delayed data kept for inspection only).
-- A letter stored as one `dlq_fields` field (an entry too wide for one XADD) is
-- replayed with its event's own fields only when it is still too wide.
local EVENT_FIELDS = { id = true, name = true, ts = true, headers = true, payload = true, cid = true, traceparent = true, meta = true }
local WIDE = 7000
local found = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if #found == 0 then return false end
local fields = found[1][2]
local args = {}
local group = nil
local encoded = nil
for f = 1, #fields, 2 do
  local name = fields[f]
  if name == 'dlq_group' then group = fields[f + 1] end
  if name == 'dlq_fields' then encoded = fields[f + 1] end
  if string.sub(name, 1, 4) ~= 'dlq_' and name ~= 'replay_group' then
    args[#args + 1] = name
    args[#args + 1] = fields[f + 1]
  end
end
if encoded then
  local original = cjson.decode(encoded)
  local wide = #original > WIDE
  for f = 1, #original - 1, 2 do
    local name = original[f]
    if type(name) == 'string' and type(original[f + 1]) == 'string' and name ~= 'replay_group'
      and string.sub(name, 1, 4) ~= 'dlq_' and (not wide or EVENT_FIELDS[name]) then
      args[#args + 1] = name
      args[#args + 1] = original[f + 1]
    end
  end
end
if #args == 0 then return false end
if group then
  args[#args + 1] = 'replay_group'
  args[#args + 1] = group
end
local id
if ARGV[2] ~= '' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(args))
else
  id = redis.call('XADD', KEYS[1], '*', unpack(args))
end
redis.call('XDEL', KEYS[2], ARGV[1])
return id
