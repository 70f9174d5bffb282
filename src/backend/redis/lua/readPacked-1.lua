-- Read-ahead in one call: XREADGROUP … COUNT n … '>' once per count, one read after the other, each read's entries
-- returned as ONE msgpack string (an array of [id, [field, value, …]]), so that the client parses one bulk string per
-- read instead of two per field. Every read is run, as a pipeline of XREADGROUP would (after a short one the others
-- find nothing: the script runs alone), unless the packed replies reach the byte budget: then the reads left are not
-- run (the next round of the engine reads again).
-- Without cmsgpack in the server's Lua it fails before reading anything (the caller falls back to XREADGROUP).
-- KEYS[1]  topic stream
-- ARGV[1]  group
-- ARGV[2]  consumer
-- ARGV[3]  byte budget: no further read once the packed replies of this call hold this many bytes
-- ARGV[4…] the count of each read
-- Returns: an array of msgpack strings, one per read that found entries (empty when the first found nothing).
if rawget(_G, 'cmsgpack') == nil then
  return redis.error_reply('RRS_NOMSGPACK this server has no cmsgpack in its Lua')
end
local out = {}
local bytes = 0
local budget = tonumber(ARGV[3])
for i = 4, #ARGV do
  local count = tonumber(ARGV[i])
  local res = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', count, 'STREAMS', KEYS[1], '>')
  if res then
    local packed = cmsgpack.pack(res[1][2])
    out[#out + 1] = packed
    bytes = bytes + #packed
    if bytes >= budget then break end
  end
end
return out
