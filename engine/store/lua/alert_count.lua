-- Beacon alert desk: how many alerts of each status a filter (other than status) admits.
-- Without a filter, one ZCOUNT per status index. With one, the smallest of the indexes it
-- names is walked, at most ARGV[3] entries (exact 0 beyond: the counts are of those read).
-- KEYS: 1 status index prefix, 2.. index zsets the alert must be in (id -> created ms)
-- ARGV: 1 lowest created ms, 2 highest created ms, 3 entries read at most, 4.. the statuses
-- Returns {exact (0|1), count of ARGV[4], count of ARGV[5], ...}
local lo, hi, budget = ARGV[1], ARGV[2], tonumber(ARGV[3])
local counts = {}
if #KEYS == 1 then
  for i = 4, #ARGV do table.insert(counts, redis.call('ZCOUNT', KEYS[1] .. ARGV[i], lo, hi)) end
  return {1, unpack(counts)}
end
local best, size = 2, redis.call('ZCARD', KEYS[2])
for i = 3, #KEYS do
  local n = redis.call('ZCARD', KEYS[i])
  if n < size then best, size = i, n end
end
for i = 4, #ARGV do counts[i - 3] = 0 end
local rows = redis.call('ZRANGE', KEYS[best], hi, lo, 'BYSCORE', 'REV', 'LIMIT', 0, budget)
for _, id in ipairs(rows) do
  local match = true
  for i = 2, #KEYS do
    if i ~= best and not redis.call('ZSCORE', KEYS[i], id) then match = false break end
  end
  if match then
    for i = 4, #ARGV do
      if redis.call('ZSCORE', KEYS[1] .. ARGV[i], id) then counts[i - 3] = counts[i - 3] + 1 break end
    end
  end
end
return {#rows < budget and 1 or 0, unpack(counts)}
