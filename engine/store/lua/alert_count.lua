-- Beacon alert desk: how many alerts of each status a filter (other than status) admits,
-- created within [lowest, highest] ms.
-- Each count walks the smallest of the sets it intersects (the status's index and the
-- filter's), at most ARGV[3] entries of it: the unresolved statuses' indexes are the desk's
-- backlog, small when the desk keeps up. With one filter or none, the last status (resolved,
-- the large one) is the filter's total less the others, so every count is exact; beyond
-- the bound a count is of the newest entries read, and exact is 0.
-- KEYS: 1 status index prefix, 2.. index zsets the alert must be in (id -> created ms)
-- ARGV: 1 lowest created ms, 2 highest created ms, 3 entries read at most per count,
--       4.. the statuses, the derived one last
-- Returns {exact (0|1), count of ARGV[4], count of ARGV[5], ...}
local lo, hi, budget = ARGV[1], ARGV[2], tonumber(ARGV[3])
local exact = 1
local function intersection(sets)
  local best, size = 1, redis.call('ZCOUNT', sets[1], lo, hi)
  for i = 2, #sets do
    local n = redis.call('ZCOUNT', sets[i], lo, hi)
    if n < size then best, size = i, n end
  end
  if size == 0 or #sets == 1 then return size end
  if size > budget then exact = 0 end
  local ids = redis.call('ZRANGE', sets[best], hi, lo, 'BYSCORE', 'REV', 'LIMIT', 0, budget)
  local n = 0
  for _, id in ipairs(ids) do
    local all = true
    for i = 1, #sets do
      if i ~= best and not redis.call('ZSCORE', sets[i], id) then all = false break end
    end
    if all then n = n + 1 end
  end
  return n
end
local counts, sum = {}, 0
for i = 4, #ARGV do
  local sets = {KEYS[1] .. ARGV[i]}
  for k = 2, #KEYS do table.insert(sets, KEYS[k]) end
  local n
  if i == #ARGV and #KEYS == 2 and exact == 1 then  -- the rest of the filter's total
    n = redis.call('ZCOUNT', KEYS[2], lo, hi) - sum
  else
    n = intersection(sets)
  end
  sum = sum + n
  table.insert(counts, n)
end
return {exact, unpack(counts)}
