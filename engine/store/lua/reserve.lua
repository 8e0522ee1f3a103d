-- Beacon daily-cap reservations, on a Redis Cluster only (engine/store/clustersplit.py):
-- the impressions per offer per day live in one slot apart from every customer's, so
-- before a commit the worker reserves one impression for each candidate with a daily
-- cap, here, atomically: granted while the day's count is below the cap. The commit
-- shows only granted candidates; the worker gives back the grants not shown.
-- KEYS: the day hashes (one slot); ARGV[1] JSON [[key index, offer, cap], ...].
-- Returns 1 (granted) or 0 per request, in order.
local out = {}
for i, req in ipairs(cjson.decode(ARGV[1])) do
  local k = KEYS[req[1]]
  if (tonumber(redis.call('HGET', k, req[2])) or 0) < req[3] then
    redis.call('HINCRBY', k, req[2], 1)
    out[i] = 1
  else
    out[i] = 0
  end
end
for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, 3 * 86400) end
return out
