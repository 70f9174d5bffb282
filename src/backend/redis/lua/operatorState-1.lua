-- One change of a window or join operator's state hash (atomic).
-- KEYS[1]  the state hash (event:opstate:{topic}:<group>:<operator>:<part>)
-- ARGV[1]  expireAt, epoch ms: the hash expires then, unless it already expires later
-- ARGV[2]  nSet, ARGV[3] nMax, ARGV[4] nDelete
-- then nSet field/value pairs to set, nMax field/number pairs to raise (kept when not larger), nDelete fields
-- returns: the previous value of each field set (false when absent)
local key = KEYS[1]
local nSet, nMax, nDelete = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local previous = {}
local i = 5
for k = 1, nSet do
  previous[k] = redis.call('HGET', key, ARGV[i])
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, nMax do
  local current = tonumber(redis.call('HGET', key, ARGV[i]) or '')
  if current == nil or tonumber(ARGV[i + 1]) > current then redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
  i = i + 2
end
for _ = 1, nDelete do
  redis.call('HDEL', key, ARGV[i])
  i = i + 1
end
if redis.call('EXISTS', key) == 1 then
  if redis.call('PTTL', key) < 0 then
    redis.call('PEXPIREAT', key, ARGV[1])
  else
    redis.call('PEXPIREAT', key, ARGV[1], 'GT')
  end
end
return previous
