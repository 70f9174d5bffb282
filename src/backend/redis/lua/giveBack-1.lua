-- Gives pending entries back to their group without counting a delivery: each
-- entry still owned by the consumer gets the idle time ARGV[3] (so the next
-- claim by any consumer takes it at once) and the delivery count given with it
-- (RETRYCOUNT; JUSTID returns ids only). Entries another consumer has claimed
-- meanwhile are left alone.
-- KEYS[1]  topic stream
-- ARGV[1]  group
-- ARGV[2]  consumer
-- ARGV[3]  idle time to set (ms)
-- ARGV[4…] pairs: entry id, delivery count to store
-- Returns: the ids given back.
local out = {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3], 'RETRYCOUNT', ARGV[i + 1], 'JUSTID')
    if #claimed == 1 then out[#out + 1] = claimed[1] end
  end
end
return out
