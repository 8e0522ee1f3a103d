-- Beacon ingest: for each event of a batch, atomically
--   1. dedupe by (channel, event_id): a repeat changes nothing and returns what the
--      first delivery stored (its decision, or the pre-event facts if it has none yet);
--      once that answer has expired (cfg.answer_ttl) but the event's id-only marker has
--      not (cfg.dedupe_ttl), the repeat is answered {dup=1, late=<first seen>}; a repeat
--      whose payload digest differs from the first's is answered {conflict=1};
--   2. update the rolling state (bucketed sliding windows, last seen, devices, PINs,
--      recent events); a label event only joins the recent events (ingest_label);
--   3. read profile + state + contact history for the decision.
-- KEYS[i] is the customer's key prefix ("<kp>:{<customer>}"); every key the script
-- touches for that event carries the same hash tag, so it is Redis Cluster safe.
-- ARGV[1] is the config (JSON); ARGV[i+1] is event i (JSON).
--
-- Cost: each redis.call has a fixed price inside Redis (arguments in, reply parsed back
-- into Lua), and each field lookup in a small hash (a ziplist or listpack) scans it. So
-- the window totals are read once and written once per event and the windows' summary
-- is computed from them (no second read), a bucket's fields go in one call when it is
-- new, expired buckets go in one call, and each key's TTL is set once per call. What is
-- stored is what one HINCRBY per field stored (same fields, same values, new fields
-- created in the same order): state written by earlier versions needs no migration
-- (tests/integration/test_script_equivalence.py runs both against each other).
local call, floor, tonumber = redis.call, math.floor, tonumber
local cfg = cjson.decode(ARGV[1])
cfg.marked_set = {}
for _, ty in ipairs(cfg.marked) do cfg.marked_set[ty] = true end
local results = {}

-- As strings: Redis formats a Lua number argument as a float, on every call.
local STATE_TTL = string.format('%d', cfg.state_ttl)

-- Doubles add integers exactly below 2^53. Past that (never in cents of real money) a
-- field is left to HINCRBY, as every field was before.
local EXACT = 2 ^ 53
local function exact_int(x)
  return x == floor(x) and x < EXACT and x > -EXACT
end

-- Keys whose TTL is set at the end of the call, once each, however many events wrote them.
local ttl_of = {}
local function keep(key, ttl)
  ttl_of[key] = ttl
end

-- Keep the ``bound`` newest fields of a hash of timestamps (only runs past the bound).
local function drop_oldest(key, bound)
  local flat = call('HGETALL', key)
  local by_ts = {}
  for j = 1, #flat, 2 do by_ts[#by_ts + 1] = {flat[j], tonumber(flat[j + 1]) or 0} end
  table.sort(by_ts, function(a, b) return a[2] < b[2] end)
  local old = {}
  for j = 1, #by_ts - bound do old[j] = by_ts[j][1] end
  if #old > 0 then call('HDEL', key, unpack(old)) end
end

local function hgetall_map(key)
  local flat = call('HGETALL', key)
  local m = {}
  for j = 1, #flat, 2 do m[flat[j]] = flat[j + 1] end
  return m
end

-- unpack() is bounded by Lua's C stack (8000 values): long argument lists go in chunks.
local function call_chunked(cmd, key, args)
  for i = 1, #args, 4000 do
    call(cmd, key, unpack(args, i, math.min(i + 3999, #args)))
  end
end

-- Windows: per window a hash of buckets ('<bucket>|<dim>|c|a'); one totals hash for
-- all windows ('<window>|<dim>|c|a', plus '<window>|_hi' and '<window>|_lo', the newest
-- bucket seen and the oldest that may still hold data). Dimensions are the channel and
-- the type; the total over all events is the sum over channels (derived by the reader).

-- Totals fields that do not depend on the event, built once per call: per window
-- {_hi, _lo, then the count and cents field of each configured channel in order}.
local channel_index = {}
for k, name in ipairs(cfg.channels) do channel_index[name] = k end
local names = {}
for i, w in ipairs(cfg.windows) do
  local nm = {w[1] .. '|_hi', w[1] .. '|_lo'}
  for _, name in ipairs(cfg.channels) do
    nm[#nm + 1] = w[1] .. '|ch:' .. name .. '|c'
    nm[#nm + 1] = w[1] .. '|ch:' .. name .. '|a'
  end
  names[i] = nm
end

-- The event's dimensions; its totals fields, window i's at 4i-3..4i {channel count,
-- channel cents, type count, type cents}; its amount unless none or zero (as before, a
-- zero amount creates no field).
local function prepare(ev)
  ev.dch, ev.dty = 'ch:' .. ev.ch, 'ty:' .. ev.ty
  local f, k = {}, channel_index[ev.ch]
  for i, w in ipairs(cfg.windows) do
    f[#f + 1] = k and names[i][2 * k + 1] or w[1] .. '|' .. ev.dch .. '|c'
    f[#f + 1] = k and names[i][2 * k + 2] or w[1] .. '|' .. ev.dch .. '|a'
    f[#f + 1] = w[1] .. '|' .. ev.dty .. '|c'
    f[#f + 1] = w[1] .. '|' .. ev.dty .. '|a'
  end
  ev.fields = f
  if ev.amt ~= 0 then ev.add = ev.amt end
end

-- The totals hash read whole (one pass, where HMGET scans a small hash once per field),
-- changed here and written back with one HSET. val[f] is the stored string, or once
-- changed the new value (a number), or false when the field is left to HINCRBY (big[f]
-- then holds its value). order: the changed fields, in the order they changed.
local function totals(key)
  return {key = key, val = hgetall_map(key), order = {}}
end

-- v: a number, or with neg a stored integer string to subtract (as '-' .. v did).
local function add(h, field, v, neg)
  local cur = h.val[field]
  if cur ~= false then
    local a, d = cur and cur + 0 or 0, v + 0
    local s = neg and a - d or a + d
    if exact_int(d) and not (neg and d < 0) and a < EXACT and a > -EXACT and s < EXACT and s > -EXACT then
      if type(cur) ~= 'number' then h.order[#h.order + 1] = field end
      if s == 0 then s = 0 end  -- never -0, which Redis 6 would write as "-0"
      h.val[field] = s
      return
    end
    if type(cur) == 'number' then call('HSET', h.key, field, cur) end
    h.val[field] = false
  end
  h.big = h.big or {}
  h.big[field] = call('HINCRBY', h.key, field, neg and '-' .. v or v)
end

local function num(h, field)
  local v = h.val[field]
  if v then return v + 0 end
  if v == false then return h.big[field] end
  return 0
end

-- The changed fields, then the window metadata: where one HINCRBY per field and the
-- metadata's HSET created them before. Numbers go as they are (Redis writes integers
-- below 2^53 digit for digit).
local function write_totals(h, meta)
  local args = {}
  for _, f in ipairs(h.order) do
    local v = h.val[f]
    if type(v) == 'number' then
      args[#args + 1] = f
      args[#args + 1] = v
    end
  end
  for _, x in ipairs(meta) do args[#args + 1] = x end
  if #args > 0 then call_chunked('HSET', h.key, args) end
end

-- The event's fields in a window's bucket hash (pre: '<bucket>|'). Every bucket index is
-- <= _hi, so a bucket past it is new: its fields are set outright (in the order HINCRBY
-- created them); an existing one's are incremented.
local function bump_bucket(b, pre, ev, fresh)
  local amt = ev.add
  local ch, ty = pre .. ev.dch, pre .. ev.dty
  if fresh and not amt then
    call('HSET', b, ch .. '|c', 1, ty .. '|c', 1)
  elseif fresh and exact_int(amt) then
    call('HSET', b, ch .. '|c', 1, ch .. '|a', amt, ty .. '|c', 1, ty .. '|a', amt)
  else
    call('HINCRBY', b, ch .. '|c', 1)
    if amt then call('HINCRBY', b, ch .. '|a', amt) end
    call('HINCRBY', b, ty .. '|c', 1)
    if amt then call('HINCRBY', b, ty .. '|a', amt) end
  end
end

-- Drop buckets that fell out of the window and subtract them from the totals.
local function expire_window(b, name, cutoff, tot)
  local flat = call('HGETALL', b)
  local gone = {}
  for j = 1, #flat, 2 do
    local f = flat[j]
    local sep = string.find(f, '|', 1, true)
    if tonumber(string.sub(f, 1, sep - 1)) < cutoff then
      -- Subtract the stored string as is: no float formatting of large sums.
      add(tot, name .. string.sub(f, sep), flat[j + 1], true)
      gone[#gone + 1] = f
    end
  end
  -- Every bucket out (a customer back after a while): one DEL instead of a long HDEL.
  if #gone > 0 and 2 * #gone == #flat then
    call('DEL', b)
  elseif #gone > 0 then
    call_chunked('HDEL', b, gone)
  end
end

local function update_windows(p, ev, tot)
  local meta, f = {}, ev.fields
  for i, w in ipairs(cfg.windows) do
    local name, width, n, nm = w[1], w[2], w[3], names[i]
    local cur = floor(ev.ts / width)
    local old_hi, old_lo = tonumber(tot.val[nm[1]]), tonumber(tot.val[nm[2]])
    local hi, lo = old_hi, old_lo
    if not hi then hi, lo = cur, cur end
    if cur > hi then hi = cur end
    local cutoff = hi - n + 1
    local b = p .. ':wb:' .. name
    -- Expired buckets first (the event's is never one of them: cur >= cutoff or it is
    -- not counted), so the event's fields do not make the hash look partly expired.
    if lo < cutoff then
      expire_window(b, name, cutoff, tot)
      lo = cutoff
    end
    -- An event older than the window (late, out of order) counts only in wider windows.
    if cur >= cutoff then
      bump_bucket(b, cur .. '|', ev, old_hi ~= nil and cur > old_hi)
      add(tot, f[4 * i - 3], 1)
      if ev.add then add(tot, f[4 * i - 2], ev.add) end
      add(tot, f[4 * i - 1], 1)
      if ev.add then add(tot, f[4 * i], ev.add) end
      if cur < lo then lo = cur end
    end
    if hi ~= old_hi then
      meta[#meta + 1] = nm[1]
      meta[#meta + 1] = hi
    end
    if lo ~= old_lo then
      meta[#meta + 1] = nm[2]
      meta[#meta + 1] = lo
    end
    keep(b, STATE_TTL)
  end
  write_totals(tot, meta)
  keep(tot.key, STATE_TTL)
end

-- Facts about the customer *before* this event (what "new device" etc. mean).
local function prior_facts(p, ev)
  local facts = {last = hgetall_map(p .. ':last')}
  if ev.dev then
    facts.device_known = call('ZSCORE', p .. ':dev', ev.dev) ~= false
  end
  facts.devices = call('ZCARD', p .. ':dev')
  -- When each marked event type (and a new device) was last seen, before this event.
  local seen = call('HMGET', p .. ':seen', unpack(cfg.marked))
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
    call('HSET', p .. ':seen', unpack(fields))
    keep(p .. ':seen', STATE_TTL)
  end
  -- A declined offer starts its cool-down (the commit script reads this hash). The
  -- action id comes from the channel: past the bound, the oldest declines go first.
  if ev.ty == 'offer_response' and ev.act and ev.resp == 'declined' then
    local k = p .. ':declined'
    call('HSET', k, ev.act, ev.ts)
    if call('HLEN', k) > cfg.declined_bound then drop_oldest(k, cfg.declined_bound) end
    keep(k, STATE_TTL)
  end
end

-- Customers seen on a device in the last 24 hours (one device, many customers).
-- The key is the device's own, outside the customer's slot: see README, Redis Cluster.
local function device_customers(ev, update)
  if not ev.dev then return 0 end
  local k = cfg.key_prefix .. ':{dev:' .. ev.dev .. '}:customers'
  if not update then return call('ZCOUNT', k, ev.ts - 86400, '+inf') end
  call('ZADD', k, ev.ts, ev.cid)
  call('ZREMRANGEBYSCORE', k, '-inf', ev.ts - 86400)
  keep(k, '172800')
  -- Whatever is left is newer than a day ago: the count is the size.
  local n = call('ZCARD', k)
  if n <= cfg.device_customers then return n end
  call('ZREMRANGEBYRANK', k, 0, -(cfg.device_customers + 1))
  return cfg.device_customers
end

-- last, written whole: the same fields in the same order overwrite in place; otherwise
-- the old fields (a device, a terminal) must go first.
local function update_last(p, ev, before)
  local last = p .. ':last'
  local fields = {'ts', ev.ts, 'ch', ev.ch, 'ty', ev.ty, 'id', ev.id}
  if ev.dev then fields[#fields + 1] = 'dev'; fields[#fields + 1] = ev.dev end
  if ev.term then fields[#fields + 1] = 'term'; fields[#fields + 1] = ev.term end
  if ev.lat then
    fields[#fields + 1] = 'lat'; fields[#fields + 1] = ev.lat
    fields[#fields + 1] = 'lon'; fields[#fields + 1] = ev.lon
  end
  local same = true
  local n = 0
  for _ in pairs(before) do n = n + 1 end
  for j = 1, #fields, 2 do same = same and before[fields[j]] ~= nil end
  if not same or n ~= #fields / 2 then call('DEL', last) end
  call('HSET', last, unpack(fields))
end

-- The customer's recent events (the unified view's history), label events included.
local function log_recent(p, ev)
  local recent = p .. ':ev'
  if call('LPUSH', recent, ev.summary) > cfg.recent_events then
    call('LTRIM', recent, 0, cfg.recent_events - 1)
  end
  keep(recent, STATE_TTL)
end

-- Returns the totals as written, which the window summary reads.
local function update_state(p, ev, facts)
  local tot = totals(p .. ':wt')
  update_windows(p, ev, tot)
  local last_ts = tonumber(facts.last.ts)
  if not last_ts or ev.ts >= last_ts then update_last(p, ev, facts.last) end
  keep(p .. ':last', STATE_TTL)
  if ev.dev then
    local dev = p .. ':dev'
    call('ZADD', dev, 'GT', ev.ts, ev.dev)
    if facts.devices + (facts.device_known and 0 or 1) > cfg.known_devices then
      call('ZREMRANGEBYRANK', dev, 0, -(cfg.known_devices + 1))
    end
    keep(dev, STATE_TTL)
  end
  if ev.ty == 'pin_failure' then
    local pin = p .. ':pin'
    call('ZADD', pin, ev.ts, ev.id .. '|' .. (ev.term or ''))
    call('ZREMRANGEBYSCORE', pin, '-inf', ev.ts - 86400)
    call('ZREMRANGEBYRANK', pin, 0, -(cfg.recent_pins + 1))
    keep(pin, STATE_TTL)
  end
  log_recent(p, ev)
  return tot
end

-- What the features need of the windows, summed here so the reader parses a few numbers:
-- per window {all count, all cents, channel count, channel cents, type count, type cents},
-- then the complaints of the 7-day window. "All" is the sum over the configured channels.
local function window_summary(tot, ev)
  local out, k, f = {}, channel_index[ev.ch], ev.fields
  for i, nm in ipairs(names) do
    local all_c, all_a, ch_c, ch_a = 0, 0, 0, 0
    for j = 1, #cfg.channels do
      local c, a = num(tot, nm[2 * j + 1]), num(tot, nm[2 * j + 2])
      all_c, all_a = all_c + c, all_a + a
      if j == k then ch_c, ch_a = c, a end
    end
    out[#out + 1] = {all_c, all_a, ch_c, ch_a, num(tot, f[4 * i - 1]), num(tot, f[4 * i])}
  end
  out[#out + 1] = num(tot, '7d|ty:complaint|c')
  return out
end

local function contact_history(p, ts)
  return call('ZRANGEBYSCORE', p .. ':contact', ts - cfg.contact_window, '+inf',
    'WITHSCORES')
end

-- Dedupe markers: one hash per customer (':dm'), a field per event id seen within the
-- dedupe window, small enough for Redis' compact encoding. Field: the first 8 bytes of
-- SHA-1('<channel>:<event_id>'); value: the server time it was first seen (4 bytes, big
-- endian) and the payload digest (ev.h, 8 bytes). The answer itself (':dd:') is kept only
-- cfg.answer_ttl (commit.lua); the marker, for the whole window, so a late repeat is still
-- a repeat and another payload under the id still a conflict. A marker older than the
-- window counts as none; the old ones are dropped when the oldest is 1/8 window overdue.
local NOW = tonumber(call('TIME')[1])
local NOW_S = string.format('%d', NOW)
local DEDUPE_TTL = string.format('%d', cfg.dedupe_ttl)
local function unhex(h)
  return (string.gsub(h, '..', function(x) return string.char(tonumber(x, 16)) end))
end

-- The event's marker field, its marker if one is alive ({first seen, digest}), and the
-- oldest marker's time, kept under the empty field (no event's field is empty).
local function marker_of(p, ev)
  local field = unhex(string.sub(redis.sha1hex(ev.ch .. ':' .. ev.id), 1, 16))
  local v, oldest = unpack(call('HMGET', p .. ':dm', field, ''))
  if v then
    local first = struct.unpack('>I4', v)
    if first > NOW - cfg.dedupe_ttl then return field, {first, string.sub(v, 5)}, tonumber(oldest) end
  end
  return field, nil, tonumber(oldest)
end

local function mark(p, ev, field, oldest)
  local k = p .. ':dm'
  call('HSET', k, field, struct.pack('>I4', NOW) .. (ev.hb or ''))
  keep(k, DEDUPE_TTL)
  if not oldest then
    call('HSET', k, '', NOW_S)
  elseif oldest < NOW - cfg.dedupe_ttl - floor(cfg.dedupe_ttl / 8) then
    local flat, gone, lo = call('HGETALL', k), {}, NOW
    for j = 1, #flat, 2 do
      if flat[j] ~= '' then
        local t = struct.unpack('>I4', flat[j + 1])
        if t <= NOW - cfg.dedupe_ttl then gone[#gone + 1] = flat[j] elseif t < lo then lo = t end
      end
    end
    if #gone > 0 then call_chunked('HDEL', k, gone) end
    call('HSET', k, '', string.format('%d', lo))
  end
end

local function ingest_one(p, ev, dd, stored)
  local res = {}
  local tot
  if stored then
    res.dup = 1
    res.stored = stored
    tot = totals(p .. ':wt')
  else
    local facts = prior_facts(p, ev)
    -- Pending until the commit stores the answer: kept the whole window, so a first
    -- delivery that never finished is redone with these facts however late its repeat.
    call('SET', dd, cjson.encode({pending = 1, facts = facts}), 'EX', cfg.dedupe_ttl)
    tot = update_state(p, ev, facts)
    mark_seen(p, ev, facts)
    res.facts = facts
  end
  -- On a Redis Cluster the device's key is in another slot: engine/store/layout.py.
  if not cfg.devices_apart then res.dev_customers = device_customers(ev, not stored) end
  res.windows = window_summary(tot, ev)
  res.profile = call('GET', p .. ':profile')
  res.contact = contact_history(p, ev.ts)
  res.open_alerts = call('HLEN', p .. ':alerts')
  res.pin_recent = call('ZCOUNT', p .. ':pin', ev.ts - 3600, '+inf')
  -- The profile's TTL runs from the CRM's last write, not the customer's last event
  -- (issue 17, finding 10): activity does not keep personal data alive.
  return res
end

-- A label event (ev.fb: a fraud report, an offer response...) is feedback, not activity:
-- deduplicated and kept in the recent events, but no state a decision reads changes (and
-- none is read). An offer response still marks its time; a decline starts the cool-down.
local NO_FACTS = {}
local function ingest_label(p, ev, dd, stored)
  if stored then return {dup = 1, stored = stored} end
  call('SET', dd, '{"pending":1}', 'EX', cfg.dedupe_ttl)
  mark_seen(p, ev, NO_FACTS)
  log_recent(p, ev)
  return {fb = 1}
end

local function ingest_all()
  for i, p in ipairs(KEYS) do
    local ev = cjson.decode(ARGV[i + 1])
    if not ev.fb then prepare(ev) end
    local dd = p .. ':dd:' .. ev.ch .. ':' .. ev.id
    local stored = call('GET', dd)
    local field, marker, oldest = marker_of(p, ev)
    ev.hb = ev.h and unhex(ev.h)  -- the payload digest as the marker holds it, once per event
    -- The digest bound to the id: the marker's, or for a dedupe key written before the
    -- markers (a dedupe window after the upgrade there are none left) its ':dh:' key's.
    local bound = marker and marker[2]
    if stored and not marker and ev.h then
      bound = call('GET', p .. ':dh:' .. ev.ch .. ':' .. ev.id)
      bound = bound and unhex(bound)
    end
    -- A repeat must carry the payload its event id was first seen with: another one is a
    -- conflict, which reads and changes nothing (not even a TTL). A dedupe key without a
    -- digest was written before digests were bound: a repeat, as it was then.
    if (stored or marker) and ev.hb and bound and bound ~= '' and bound ~= ev.hb then
      results[i] = {conflict = 1}
    elseif marker and not stored then
      -- Seen within the window, its answer no longer kept: a repeat, acknowledged as
      -- such; nothing is read, changed or decided again.
      results[i] = {dup = 1, late = marker[1]}
    else
      results[i] = (ev.fb and ingest_label or ingest_one)(p, ev, dd, stored)
      if not stored then mark(p, ev, field, oldest) end
    end
  end
end

-- The TTLs are set even if an event fails half way, so nothing written is left to live forever.
local ok, err = pcall(ingest_all)
for k, ttl in pairs(ttl_of) do call('EXPIRE', k, ttl) end
if not ok then error(err, 0) end
return cjson.encode(results)
