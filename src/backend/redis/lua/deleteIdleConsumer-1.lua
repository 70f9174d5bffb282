-- Deletes a consumer of a group only when it has no pending entries, so that
-- deleting a stale consumer can never drop a pending message.
-- KEYS[1]  topic stream
-- ARGV[1]  group
-- ARGV[2]  consumer
-- Returns: 1 when deleted, 0 when it had pending entries or did not exist.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return 0 end
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
for _, c in ipairs(consumers) do
  for f = 1, #c, 2 do
    if c[f] == 'name' and c[f + 1] == ARGV[2] then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
  end
end
return 0
