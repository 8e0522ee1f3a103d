-- Beacon ingest: for each event of a batch, atomically
--   1. dedupe by (channel, event_id): a repeat changes nothing and returns what the
--      first delivery stored (its decision, or the pre-event facts if it has none yet);
--   2. update the rolling state (bucketed sliding windows, last seen, devices, PINs,
--      recent events);
--   3. read profile + state + contact history for the decision.
-- KEYS[i] is the customer's key prefix ("<kp>:{<customer>}"); every key the script
-- touches for that event carries the same hash tag, so it is Redis Cluster safe.
-- ARGV[1] is the config (JSON); ARGV[i+1] is event i (JSON).
local cfg = cjson.decode(ARGV[1])
cfg.marked_set = {}
for _, ty in ipairs(cfg.marked) do cfg.marked_set[ty] = true end
local results = {}

local function hgetall_map(key)
  local flat = redis.call('HGETALL', key)
  local m = {}
  for j = 1, #flat, 2 do m[flat[j]] = flat[j + 1] end
  return m
end

local function bump(key, field, by)
  if by ~= 0 then redis.call('HINCRBY', key, field, by) end
end

-- Windows: per window a hash of buckets ('<bucket>|<dim>|c|a'); one totals hash for
-- all windows ('<window>|<dim>|c|a', plus '<window>|_hi' and '<window>|_lo', the newest
-- bucket seen and the oldest that may still hold data). Dimensions are the channel and
-- the type; the total over all events is the sum over channels (derived by the reader).

-- Drop buckets that fell out of the window and subtract them from the totals.
local function expire_window(b, t, name, cutoff)
  local flat = redis.call('HGETALL', b)
  for j = 1, #flat, 2 do
    local f = flat[j]
    local sep = string.find(f, '|', 1, true)
    if tonumber(string.sub(f, 1, sep - 1)) < cutoff then
      -- Subtract the stored string as is: no float formatting of large sums.
      redis.call('HINCRBY', t, name .. string.sub(f, sep), '-' .. flat[j + 1])
      redis.call('HDEL', b, f)
    end
  end
end

local function update_windows(p, ev)
  local t = p .. ':wt'
  local meta_fields = {}
  for i, w in ipairs(cfg.windows) do
    meta_fields[2 * i - 1] = w[1] .. '|_hi'
    meta_fields[2 * i] = w[1] .. '|_lo'
  end
  local meta = redis.call('HMGET', t, unpack(meta_fields))
  local new_meta = {}
  local dims = {'ch:' .. ev.ch, 'ty:' .. ev.ty}
  for i, w in ipairs(cfg.windows) do
    local name, width, n = w[1], w[2], w[3]
    local b = p .. ':wb:' .. name
    local cur = math.floor(ev.ts / width)
    local hi, lo = tonumber(meta[2 * i - 1]), tonumber(meta[2 * i])
    if not hi then hi, lo = cur, cur end
    if cur > hi then hi = cur end
    local cutoff = hi - n + 1
    -- An event older than the window (late, out of order) counts only in wider windows.
    if cur >= cutoff then
      for _, d in ipairs(dims) do
        bump(b, cur .. '|' .. d .. '|c', 1)
        bump(t, name .. '|' .. d .. '|c', 1)
        if ev.amt then
          bump(b, cur .. '|' .. d .. '|a', ev.amt)
          bump(t, name .. '|' .. d .. '|a', ev.amt)
        end
      end
      if cur < lo then lo = cur end
    end
    if lo < cutoff then
      expire_window(b, t, name, cutoff)
      lo = cutoff
    end
    new_meta[#new_meta + 1] = name .. '|_hi'
    new_meta[#new_meta + 1] = hi
    new_meta[#new_meta + 1] = name .. '|_lo'
    new_meta[#new_meta + 1] = lo
    redis.call('EXPIRE', b, cfg.state_ttl)
  end
  redis.call('HSET', t, unpack(new_meta))
  redis.call('EXPIRE', t, cfg.state_ttl)
end

-- Facts about the customer *before* this event (what "new device" etc. mean).
local function prior_facts(p, ev)
  local facts = {last = hgetall_map(p .. ':last')}
  if ev.dev then
    facts.device_known = redis.call('ZSCORE', p .. ':dev', ev.dev) ~= false
  end
  facts.devices = redis.call('ZCARD', p .. ':dev')
  -- When each marked event type (and a new device) was last seen, before this event.
  local seen = redis.call('HMGET', p .. ':seen', unpack(cfg.marked))
  facts.seen = {}
  for j, ty in ipairs(cfg.marked) do
    if seen[j] then facts.seen[ty] = tonumber(seen[j]) end
  end
  return facts
end

local function mark_seen(p, ev, facts)
  local fields = {}
  if cfg.marked_set[ev.ty] then
    fields[#fields + 1] = ev.ty
    fields[#fields + 1] = ev.ts
  end
  if ev.dev and facts.device_known == false and facts.devices > 0 then
    fields[#fields + 1] = 'new_device'
    fields[#fields + 1] = ev.ts
  end
  if #fields > 0 then
    redis.call('HSET', p .. ':seen', unpack(fields))
    redis.call('EXPIRE', p .. ':seen', cfg.state_ttl)
  end
  -- A declined offer starts its cool-down (the commit script reads this hash).
  if ev.ty == 'offer_response' and ev.act and ev.resp == 'declined' then
    redis.call('HSET', p .. ':declined', ev.act, ev.ts)
    redis.call('EXPIRE', p .. ':declined', cfg.state_ttl)
  end
end

-- Customers seen on a device in the last 24 hours (one device, many customers).
-- The key is the device's own, outside the customer's slot: see README, Redis Cluster.
local function device_customers(ev, update)
  if not ev.dev then return 0 end
  local k = cfg.key_prefix .. ':{dev:' .. ev.dev .. '}:customers'
  if update then
    redis.call('ZADD', k, ev.ts, ev.cid)
    redis.call('ZREMRANGEBYSCORE', k, '-inf', ev.ts - 86400)
    redis.call('ZREMRANGEBYRANK', k, 0, -(cfg.device_customers + 1))
    redis.call('EXPIRE', k, 2 * 86400)
  end
  return redis.call('ZCOUNT', k, ev.ts - 86400, '+inf')
end

local function update_state(p, ev)
  update_windows(p, ev)
  local last = p .. ':last'
  local last_ts = tonumber(redis.call('HGET', last, 'ts'))
  if not last_ts or ev.ts >= last_ts then
    redis.call('DEL', last)
    redis.call('HSET', last, 'ts', ev.ts, 'ch', ev.ch, 'ty', ev.ty, 'id', ev.id)
    if ev.dev then redis.call('HSET', last, 'dev', ev.dev) end
    if ev.term then redis.call('HSET', last, 'term', ev.term) end
    if ev.lat then redis.call('HSET', last, 'lat', ev.lat, 'lon', ev.lon) end
  end
  redis.call('EXPIRE', last, cfg.state_ttl)
  if ev.dev then
    local dev = p .. ':dev'
    redis.call('ZADD', dev, 'GT', ev.ts, ev.dev)
    redis.call('ZREMRANGEBYRANK', dev, 0, -(cfg.known_devices + 1))
    redis.call('EXPIRE', dev, cfg.state_ttl)
  end
  if ev.ty == 'pin_failure' then
    local pin = p .. ':pin'
    redis.call('ZADD', pin, ev.ts, ev.id .. '|' .. (ev.term or ''))
    redis.call('ZREMRANGEBYSCORE', pin, '-inf', ev.ts - 86400)
    redis.call('ZREMRANGEBYRANK', pin, 0, -(cfg.recent_pins + 1))
    redis.call('EXPIRE', pin, cfg.state_ttl)
  end
  local recent = p .. ':ev'
  redis.call('LPUSH', recent, ev.summary)
  redis.call('LTRIM', recent, 0, cfg.recent_events - 1)
  redis.call('EXPIRE', recent, cfg.state_ttl)
end

-- What the features need of the windows, summed here so the reader parses a few numbers:
-- per window {all count, all cents, channel count, channel cents, type count, type cents},
-- then the complaints of the 7-day window. "All" is the sum over the configured channels.
local function window_summary(p, ev)
  local fields = {}
  for _, w in ipairs(cfg.windows) do
    for _, ch in ipairs(cfg.channels) do
      fields[#fields + 1] = w[1] .. '|ch:' .. ch .. '|c'
      fields[#fields + 1] = w[1] .. '|ch:' .. ch .. '|a'
    end
    fields[#fields + 1] = w[1] .. '|ty:' .. ev.ty .. '|c'
    fields[#fields + 1] = w[1] .. '|ty:' .. ev.ty .. '|a'
  end
  fields[#fields + 1] = '7d|ty:complaint|c'
  local v = redis.call('HMGET', p .. ':wt', unpack(fields))
  local out, k = {}, 0
  for _, _ in ipairs(cfg.windows) do
    local all_c, all_a, ch_c, ch_a = 0, 0, 0, 0
    for _, ch in ipairs(cfg.channels) do
      local c, a = tonumber(v[k + 1]) or 0, tonumber(v[k + 2]) or 0
      all_c, all_a = all_c + c, all_a + a
      if ch == ev.ch then ch_c, ch_a = c, a end
      k = k + 2
    end
    out[#out + 1] = {all_c, all_a, ch_c, ch_a, tonumber(v[k + 1]) or 0, tonumber(v[k + 2]) or 0}
    k = k + 2
  end
  out[#out + 1] = tonumber(v[k + 1]) or 0
  return out
end

local function contact_history(p, ts)
  return redis.call('ZRANGEBYSCORE', p .. ':contact', ts - cfg.contact_window, '+inf',
    'WITHSCORES')
end

for i, p in ipairs(KEYS) do
  local ev = cjson.decode(ARGV[i + 1])
  local dd = p .. ':dd:' .. ev.ch .. ':' .. ev.id
  local stored = redis.call('GET', dd)
  local res = {}
  if stored then
    res.dup = 1
    res.stored = stored
  else
    local facts = prior_facts(p, ev)
    redis.call('SET', dd, cjson.encode({pending = 1, facts = facts}), 'EX', cfg.dedupe_ttl)
    update_state(p, ev)
    mark_seen(p, ev, facts)
    res.facts = facts
  end
  res.dev_customers = device_customers(ev, not stored)
  res.windows = window_summary(p, ev)
  res.profile = redis.call('GET', p .. ':profile')
  res.contact = contact_history(p, ev.ts)
  res.open_alerts = redis.call('HLEN', p .. ':alerts')
  res.pin_recent = redis.call('ZCOUNT', p .. ':pin', ev.ts - 3600, '+inf')
  if res.profile then redis.call('EXPIRE', p .. ':profile', cfg.profile_ttl) end
  results[i] = res
end
return cjson.encode(results)
