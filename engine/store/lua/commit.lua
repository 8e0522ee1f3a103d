-- Beacon commit: after decisions are made, for each one atomically
--   1. pick the actions to show: the ranked candidates in order, skipping any that
--      would break a contact-policy cap (per offer, per channel, overall, cool-down
--      after a decline, global daily cap per offer), up to max; the fallback if none;
--   2. raise each alert unless the same rule alerted this customer within its
--      suppression window;
--   3. count the impressions, store the final decision (so a repeated event gets the
--      same answer) and append it to the customer's bounded history;
--   4. append the decision's outgoing records (audit record, alerts raised, label) to
--      the outbox stream, which the relay (agents/relay.py) delivers to Kafka: a reply
--      lost on the way back loses no record, since the retry is a replay.
-- Counters live in Redis beside the rolling state, so two workers never overshoot.
-- A label event's acknowledgement only does 3 (no history entry) and 4: commit_feedback.
-- KEYS[i] is the customer's key prefix; ARGV[1] the config (JSON); ARGV[i+1] decision i:
--   {cust, audit=[7 parts], label, dd, did, ts, ch, day, max, head, mid, tail, sumhead,
--    fallback={id,frag,kept}, cands=[{id, frag, kept, caps=[[kind,max,window,label]...], cool, daily}],
--    alerts=[{id, rule, frag, inbox, sup}]}
-- Returns, per decision, {body, picked=[index...], capped=[[index, why]...], alerts=[index...]}.
-- ARGV[1] holds only the settings this script reads: it is decoded on every call.
local cfg = cjson.decode(ARGV[1])
local out = {}

-- Keys whose TTL is set at the end of the call, once each, however many decisions wrote
-- them (a batch's decisions share the global daily-cap hash, a customer's history...).
local ttl_of = {}
local function keep(key, ttl)
  ttl_of[key] = ttl
end

local function contact_counts(p, r)
  -- Impressions in the longest cap window: member is decision|action|channel.
  local widest = 0
  for _, c in ipairs(r.cands) do
    for _, cap in ipairs(c.caps) do
      if cap[3] > widest then widest = cap[3] end
    end
  end
  local seen = {}
  if widest > 0 then
    local flat = redis.call('ZRANGEBYSCORE', p .. ':contact', r.ts - widest, '+inf', 'WITHSCORES')
    for j = 1, #flat, 2 do
      local _, _, act, ch = string.find(flat[j], '^[^|]*|([^|]*)|(.*)$')
      seen[#seen + 1] = {act, ch, tonumber(flat[j + 1])}
    end
  end
  return seen
end

local function count(seen, r, kind, window, id)
  local n = 0
  for _, s in ipairs(seen) do
    if s[3] > r.ts - window then
      if kind == 'overall' or (kind == 'offer' and s[1] == id) or (kind == 'channel' and s[2] == r.ch) then
        n = n + 1
      end
    end
  end
  return n
end

-- Whether an offer with a daily cap may be shown. On a Redis Cluster (cfg.granted) the
-- day's counts are in another slot: the worker reserved an impression there for each
-- such candidate before this call, and gives back the ones not shown after it
-- (engine/store/clustersplit.py). On one Redis they are counted here.
local function daily_full(r, c)
  if cfg.granted then
    return not cfg.granted[r.did .. '|' .. c.id]
  end
  return (tonumber(redis.call('HGET', cfg.key_prefix .. ':caps:' .. r.day, c.id)) or 0) >= c.daily
end

local function count_daily(r, id)
  if cfg.granted then return end  -- reserved before the call
  local k = cfg.key_prefix .. ':caps:' .. r.day
  redis.call('HINCRBY', k, id, 1)
  keep(k, 3 * 86400)
end

-- Why a candidate cannot be shown now, or nil.
local function capped(p, r, c, seen)
  for _, cap in ipairs(c.caps) do
    if count(seen, r, cap[1], cap[3], c.id) >= cap[2] then
      return cap[1] .. ' cap reached: at most ' .. cap[4]
    end
  end
  if c.cool > 0 then
    local declined = tonumber(redis.call('HGET', p .. ':declined', c.id))
    if declined and r.ts - declined < c.cool then
      return 'declined ' .. math.floor((r.ts - declined) / 3600) .. ' h ago; cool-down not over'
    end
  end
  if c.daily > 0 then
    if daily_full(r, c) then
      return 'daily cap reached: ' .. c.daily .. ' impressions today'
    end
  end
  return nil
end

local function pick(p, r)
  local seen = contact_counts(p, r)
  local picked, capped_out, frags, ids = {}, {}, {}, {}
  for i, c in ipairs(r.cands) do
    if #picked >= r.max then break end
    local why = capped(p, r, c, seen)
    if why then
      capped_out[#capped_out + 1] = {i - 1, why}
    else
      picked[#picked + 1] = i - 1
      frags[#frags + 1] = c.frag
      ids[#ids + 1] = '"' .. c.id .. '"'
      seen[#seen + 1] = {c.id, r.ch, r.ts}  -- shown together counts too
      redis.call('ZADD', p .. ':contact', r.ts, r.did .. '|' .. c.id .. '|' .. r.ch)
      if c.daily > 0 then count_daily(r, c.id) end
    end
  end
  if #picked > 0 then
    local ch = p .. ':contact'
    redis.call('ZREMRANGEBYSCORE', ch, '-inf', r.ts - cfg.contact_window)
    redis.call('ZREMRANGEBYRANK', ch, 0, -(cfg.contact_history + 1))
    keep(ch, cfg.state_ttl)
  else
    frags[1] = r.fallback.frag
    ids[1] = '"' .. r.fallback.id .. '"'
  end
  return picked, capped_out, frags, ids
end

local function raise_alerts(p, r)
  local raised, frags, rules = {}, {}, {}
  local inbox = p .. ':alerts'
  for i, a in ipairs(r.alerts) do
    local fresh = true
    if a.sup > 0 then
      fresh = redis.call('SET', p .. ':sup:' .. a.rule, a.id, 'NX', 'EX', a.sup) ~= false
    end
    if fresh then
      raised[#raised + 1] = i - 1
      frags[#frags + 1] = a.frag
      rules[#rules + 1] = '"' .. a.rule .. '"'
      redis.call('HSET', inbox, a.id, a.inbox)
    end
  end
  if #raised > 0 then
    -- Bound the inbox per customer: drop the oldest ids (ids sort by time).
    local n = redis.call('HLEN', inbox)
    if n > cfg.open_alerts then
      local all = redis.call('HKEYS', inbox)
      table.sort(all)
      redis.call('HDEL', inbox, unpack(all, 1, n - cfg.open_alerts))
    end
    keep(inbox, cfg.state_ttl)
  end
  return raised, frags, rules
end

-- The audit record: the parts engine/store/codec.py audit_parts cut around what the
-- commit decides (actions, alerts, kept, dropped, suppressed alerts; the 7th part is
-- the candidates dropped before the commit), filled in as apply_commit does in Python.
local function audit_of(r, picked, capped_out, raised, action_frags, alert_frags)
  local a = r.audit
  local shown, why_capped, kept, dropped = {}, {}, {}, {}
  if a[7] ~= '' then dropped[1] = a[7] end
  for _, i in ipairs(picked) do
    shown[i] = true
    kept[#kept + 1] = r.cands[i + 1].kept
  end
  if #kept == 0 then kept[1] = r.fallback.kept end
  for _, c in ipairs(capped_out) do why_capped[c[1]] = c[2] end
  for i, c in ipairs(r.cands) do
    local why = why_capped[i - 1]
    if why then
      dropped[#dropped + 1] = '{"id":' .. cjson.encode(c.id) .. ',"stage":"contact_policy","why":'
        .. cjson.encode(why) .. ',"values":{}}'
    elseif not shown[i - 1] then
      dropped[#dropped + 1] = '{"id":' .. cjson.encode(c.id) .. ',"stage":"rank","why":"ranked below the top '
        .. r.max .. '","values":{}}'
    end
  end
  local suppressed = ''
  if #raised < #r.alerts then
    local up, rules = {}, {}
    for _, i in ipairs(raised) do up[i] = true end
    for i, al in ipairs(r.alerts) do
      if not up[i - 1] then rules[#rules + 1] = cjson.encode(al.rule) end
    end
    suppressed = ',"suppressed_alerts":[' .. table.concat(rules, ',') .. ']'
  end
  return a[1] .. '[' .. table.concat(action_frags, ',') .. ']' .. a[2] .. '['
    .. table.concat(alert_frags, ',') .. ']' .. a[3] .. '[' .. table.concat(kept, ',') .. ']' .. a[4]
    .. '[' .. table.concat(dropped, ',') .. ']' .. a[5] .. suppressed .. a[6]
end

local function to_outbox(r, audit, raised)
  local fields = {'c', r.cust, 'a', audit}
  for n, i in ipairs(raised) do  -- one field per alert record, as the relay sends it
    fields[#fields + 1] = 'al' .. n
    fields[#fields + 1] = r.alerts[i + 1].inbox
  end
  if r.label ~= '' then
    fields[#fields + 1] = 'f'
    fields[#fields + 1] = r.label
  end
  redis.call('XADD', cfg.outbox, '*', unpack(fields))
end

local function commit_one(i, p, r)
  local picked, capped_out, action_frags, action_ids = pick(p, r)
  local raised, alert_frags, alert_rules = raise_alerts(p, r)
  -- The channel's answer: what was shown and raised (caps are explained in the audit).
  local body = r.head .. '[' .. table.concat(action_frags, ',') .. ']' .. r.mid .. '['
    .. table.concat(alert_frags, ',') .. ']' .. r.tail
  -- XX: never resurrect a dedupe key that expired. The answer is kept answer_ttl (as long
  -- as a channel retries); the id-only marker ingest.lua wrote covers the rest of the window.
  redis.call('SET', p .. ':dd:' .. r.dd, body, 'XX', 'EX', cfg.answer_ttl)
  local dc = p .. ':decisions'
  local n = redis.call('LPUSH', dc, r.sumhead .. table.concat(action_ids, ',') .. '],"alerts":['
    .. table.concat(alert_rules, ',') .. ']}')
  if n > cfg.recent_decisions then redis.call('LTRIM', dc, 0, cfg.recent_decisions - 1) end
  keep(dc, cfg.state_ttl)
  to_outbox(r, audit_of(r, picked, capped_out, raised, action_frags, alert_frags), raised)
  out[i] = {body = body, picked = picked, capped = capped_out, alerts = raised}
end

-- Whether this decision was committed already: the call is being sent again because its
-- reply was lost (engine/store/scriptline.py resends once on a dropped connection). Its
-- answer, impressions and outbox records are in; committing twice would count them twice
-- and find its own alerts suppressed.
local function committed_before(p, r)
  local stored = redis.call('GET', p .. ':dd:' .. r.dd)
  if stored and string.sub(stored, 1, 15) == '{"decision_id":' then return stored end
  return nil
end

-- A label event's acknowledgement (engine/store/codec.py _feedback_payload: {fb, cust,
-- dd, body, audit, label}): stored for repeats and its records sent, nothing else. No
-- caps, impressions or alerts, and no entry among the customer's recent decisions.
local function commit_feedback(i, p, r)
  redis.call('SET', p .. ':dd:' .. r.dd, r.body, 'XX', 'EX', cfg.answer_ttl)
  to_outbox(r, r.audit, {})
  out[i] = {body = r.body}
end

local function commit_all()
  for i, p in ipairs(KEYS) do
    local r = cjson.decode(ARGV[i + 1])
    local stored = committed_before(p, r)
    if stored then
      out[i] = {body = stored, again = 1}
    elseif r.fb then
      commit_feedback(i, p, r)
    else
      commit_one(i, p, r)
    end
  end
end

-- The TTLs are set even if a decision fails half way, so nothing written lives forever.
local ok, err = pcall(commit_all)
for k, ttl in pairs(ttl_of) do redis.call('EXPIRE', k, ttl) end
if not ok then error(err, 0) end
return cjson.encode(out)
