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
return redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(owned), 'JUSTID')
