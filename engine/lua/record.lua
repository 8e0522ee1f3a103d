-- Beacon record: after decisions are made, store each one so that a repeated event
-- gets the same answer, and append it to the customer's bounded history.
-- KEYS[i] is the customer's key prefix; ARGV[1] is the config (JSON);
-- ARGV[i+1] is {dd=<dedupe suffix>, decision=<json>, summary=<json>, ts=<epoch>,
--               contacts=[member...], alerts={id=json}}.
local cfg = cjson.decode(ARGV[1])
for i, p in ipairs(KEYS) do
  local r = cjson.decode(ARGV[i + 1])
  local dd = p .. ':dd:' .. r.dd
  -- XX: never resurrect a dedupe key that expired; KEEPTTL: keep the ingest TTL.
  redis.call('SET', dd, r.decision, 'XX', 'KEEPTTL')
  local dc = p .. ':decisions'
  redis.call('LPUSH', dc, r.summary)
  redis.call('LTRIM', dc, 0, cfg.recent_decisions - 1)
  redis.call('EXPIRE', dc, cfg.state_ttl)
  if #r.contacts > 0 then
    local ch = p .. ':contact'
    for _, m in ipairs(r.contacts) do redis.call('ZADD', ch, r.ts, m) end
    redis.call('ZREMRANGEBYSCORE', ch, '-inf', r.ts - cfg.contact_window)
    redis.call('ZREMRANGEBYRANK', ch, 0, -(cfg.contact_history + 1))
    redis.call('EXPIRE', ch, cfg.state_ttl)
  end
  local al = p .. ':alerts'
  local added = false
  for id, body in pairs(r.alerts) do
    redis.call('HSET', al, id, body)
    added = true
  end
  if added then
    -- Bound the inbox per customer: drop the oldest ids (ids sort by time).
    local n = redis.call('HLEN', al)
    if n > cfg.open_alerts then
      local ids = redis.call('HKEYS', al)
      table.sort(ids)
      for j = 1, n - cfg.open_alerts do redis.call('HDEL', al, ids[j]) end
    end
    redis.call('EXPIRE', al, cfg.state_ttl)
  end
end
return #KEYS
