-- Claims pending entries back to the consumer that owns them, for a redelivery
-- after a nack: the delivery count goes up by one. An entry that another
-- consumer has claimed meanwhile is left alone (it is being handled there), and
-- one whose body is gone is left out (XCLAIM drops it from the pending list).
-- KEYS[1]  topic stream
-- ARGV[1]  group
-- ARGV[2]  consumer
-- ARGV[3…] entry ids
-- Returns: for each entry claimed, { id, delivery count, fields }.
local out = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i])
    if #claimed == 1 and claimed[1][2] then
      out[#out + 1] = { claimed[1][1], p[1][4] + 1, claimed[1][2] }
    end
  end
end
return out
