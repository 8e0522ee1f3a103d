-- Beacon alert desk: add the alerts of before the inbox's indexes to them, a slice of the
-- time index at a time (idempotent: the indexes are sets).
-- KEYS: 1 by_time zset, 2 doc-prefix, 3-7 index prefixes (status, severity, typology,
--       assignee, customer)
-- ARGV: 1 first rank, 2 how many, 3 retention s
-- Returns how many entries of the time index were read.
local first, n, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGE', KEYS[1], first, first + n - 1)
local function indexed(key, created, id)
  redis.call('ZADD', key, created, id)
  redis.call('EXPIRE', key, keep)
end
for _, id in ipairs(ids) do
  local raw = redis.call('GET', KEYS[2] .. id)
  if raw then
    local doc = cjson.decode(raw)
    local created = doc.created
    indexed(KEYS[3] .. doc.status, created, id)
    indexed(KEYS[4] .. doc.severity, created, id)
    indexed(KEYS[5] .. doc.group, created, id)
    if type(doc.typologies) == 'table' then
      for _, t in ipairs(doc.typologies) do indexed(KEYS[5] .. t, created, id) end
    end
    if type(doc.assignee) == 'string' then indexed(KEYS[6] .. doc.assignee, created, id) end
    indexed(KEYS[7] .. doc.customer_id, created, id)
  end
end
return #ids
