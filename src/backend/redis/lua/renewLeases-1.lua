-- Renews the leases of entries still owned by one consumer: resets their idle
-- time (XCLAIM JUSTID, which leaves the delivery count alone). Entries another
-- consumer has claimed meanwhile are left untouched.
-- KEYS[1]  topic stream
-- ARGV[1]  group
-- ARGV[2]  consumer
-- ARGV[3…] entry ids
-- Returns: the ids renewed.
local owned = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then owned[#owned + 1] = ARGV[i] end
end
if #owned == 0 then return owned end
-- unpack() must be the last argument of a call, or Lua keeps only its first value.
local args = { ARGV[1], ARGV[2], 0 }
for _, id in ipairs(owned) do args[#args + 1] = id end
args[#args + 1] = 'JUSTID'
return redis.call('XCLAIM', KEYS[1], unpack(args))
