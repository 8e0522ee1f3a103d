-- Beacon alert desk: record one alert from risk.alerts, grouped per customer and
-- typology (or rule) within a window, so a burst is one alert with a count and every
-- triggering event. Idempotent by the incoming alert id (redelivery changes nothing).
-- KEYS: 1 seen-prefix, 2 doc-prefix, 3 audit-prefix, 4 group-prefix, 5 by_time zset, 6 sla zset,
--       7 backlog hash ("severity|status" -> unresolved alerts), 8-12 the inbox's index prefixes
--       (status, severity, typology, assignee, customer: zsets id -> created ms)
-- ARGV: 1 alert record (JSON), 2 group window s, 3 now ms, 4 retention s, 5 sla deadline ms (0: none),
--       6 events kept per alert, 7 pub/sub channel for changes
local a = cjson.decode(ARGV[1])
local window, now, keep = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local sla, max_events = tonumber(ARGV[5]), tonumber(ARGV[6])
local function indexed(key, created, id)  -- trimmed to retention whenever written
  redis.call('ZADD', key, created, id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - keep * 1000)
  redis.call('EXPIRE', key, keep)
end
local seen = KEYS[1] .. a.alert_id
local known = redis.call('GET', seen)
if known then return {known, 'repeat'} end
local order = {low = 1, medium = 2, high = 3, critical = 4}
local event = {event_id = a.event_id, channel = a.channel, ts = a.ts, rule_id = a.rule_id,
  reason = a.reason, decision_id = a.decision_id, alert_id = a.alert_id}
local group = KEYS[4] .. a.customer_id .. '|' .. a.group
local gid = redis.call('GET', group)
if gid then
  local raw = redis.call('GET', KEYS[2] .. gid)
  if raw then
    local doc = cjson.decode(raw)
    if doc.status ~= 'resolved' then
      doc.count = doc.count + 1
      table.insert(doc.events, event)
      while #doc.events > max_events do table.remove(doc.events, 1) end
      if order[a.severity] > order[doc.severity] then
        redis.call('ZREM', KEYS[9] .. doc.severity, gid)
        indexed(KEYS[9] .. a.severity, doc.created, gid)
        doc.severity = a.severity
      end
      doc.updated = now
      local rules_seen = false
      for _, r in ipairs(doc.rule_ids) do if r == a.rule_id then rules_seen = true end end
      if not rules_seen then table.insert(doc.rule_ids, a.rule_id) end
      redis.call('SET', KEYS[2] .. gid, cjson.encode(doc), 'KEEPTTL')
      redis.call('RPUSH', KEYS[3] .. gid, cjson.encode({at = now, who = 'beacon', action = 'grouped',
        from = doc.status, to = doc.status, note = a.rule_id .. ': ' .. a.reason}))
      redis.call('SET', seen, gid, 'EX', keep)
      redis.call('PUBLISH', ARGV[7], cjson.encode({alert_id = gid, change = 'grouped', status = doc.status,
        severity = doc.severity, customer_id = doc.customer_id, count = doc.count, at = now}))
      return {gid, 'grouped'}
    end
  end
end
local id = a.alert_id
local doc = {alert_id = id, status = 'open', severity = a.severity, customer_id = a.customer_id,
  group = a.group, typologies = a.typologies, rule_ids = {a.rule_id}, count = 1, events = {event},
  created = now, updated = now, assignee = cjson.null, disposition = cjson.null,
  context = a}
redis.call('SET', KEYS[2] .. id, cjson.encode(doc), 'EX', keep)
redis.call('RPUSH', KEYS[3] .. id, cjson.encode({at = now, who = 'beacon', action = 'raised',
  from = cjson.null, to = 'open', note = a.rule_id .. ': ' .. a.reason}))
redis.call('EXPIRE', KEYS[3] .. id, keep)
redis.call('ZADD', KEYS[5], now, id)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - keep * 1000)
if sla > 0 then redis.call('ZADD', KEYS[6], sla, id) end
indexed(KEYS[8] .. 'open', now, id)
indexed(KEYS[9] .. doc.severity, now, id)
indexed(KEYS[12] .. doc.customer_id, now, id)
indexed(KEYS[10] .. doc.group, now, id)
for _, t in ipairs(type(doc.typologies) == 'table' and doc.typologies or {}) do
  if t ~= doc.group then indexed(KEYS[10] .. t, now, id) end
end
redis.call('HINCRBY', KEYS[7], doc.severity .. '|open', 1)
redis.call('SET', group, id, 'EX', window)
redis.call('SET', seen, id, 'EX', keep)
redis.call('PUBLISH', ARGV[7], cjson.encode({alert_id = id, change = 'raised', status = 'open',
  severity = doc.severity, customer_id = doc.customer_id, count = 1, at = now}))
return {id, 'raised'}
