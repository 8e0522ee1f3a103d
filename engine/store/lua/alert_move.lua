-- Beacon alert desk: one state change, checked against the lifecycle and appended to
-- the alert's audit trail (append-only) in the same step.
-- KEYS: 1 doc, 2 audit, 3 sla zset, 4 backlog hash ("severity|status" -> unresolved alerts),
--       5 status index prefix, 6 assignee index prefix (zsets id -> created ms)
-- ARGV: 1 action (ack|assign|escalate|resolve), 2 who, 3 now ms, 4 note, 5 assignee, 6 disposition,
--       7 pub/sub channel for changes, 8 retention s (the indexes' bound)
local raw = redis.call('GET', KEYS[1])
if not raw then return {'error', 'not_found'} end
local doc = cjson.decode(raw)
local action, who, now, note = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local from = doc.status
local keep = tonumber(ARGV[8])
local function indexed(key)  -- trimmed to retention whenever written
  redis.call('ZADD', key, doc.created, doc.alert_id)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - keep * 1000)
  redis.call('EXPIRE', key, keep)
end
if from == 'resolved' then return {'error', 'already_resolved'} end
local to
if action == 'ack' then
  if from ~= 'open' and from ~= 'escalated' then return {'error', 'not_open'} end
  to = 'acknowledged'
elseif action == 'assign' then
  if ARGV[5] == '' then return {'error', 'assignee_required'} end
  if type(doc.assignee) == 'string' then redis.call('ZREM', KEYS[6] .. doc.assignee, doc.alert_id) end
  doc.assignee = ARGV[5]
  indexed(KEYS[6] .. doc.assignee)
  to = 'assigned'
elseif action == 'escalate' then
  if from ~= 'open' then return {'error', 'not_open'} end
  to = 'escalated'
elseif action == 'resolve' then
  doc.disposition = ARGV[6]
  doc.note = note
  to = 'resolved'
else
  return {'error', 'unknown_action'}
end
doc.status = to
doc.updated = now
-- First taken in hand: the desk's time to acknowledge runs from created to here.
if doc.acked == nil and (to == 'acknowledged' or to == 'assigned') then doc.acked = now end
if to == 'resolved' then doc.resolved = now end
redis.call('HINCRBY', KEYS[4], doc.severity .. '|' .. from, -1)
if to ~= 'resolved' then redis.call('HINCRBY', KEYS[4], doc.severity .. '|' .. to, 1) end
redis.call('ZREM', KEYS[5] .. from, doc.alert_id)
indexed(KEYS[5] .. to)
-- Acted on (or escalated once): the SLA clock stops.
redis.call('ZREM', KEYS[3], doc.alert_id)
redis.call('SET', KEYS[1], cjson.encode(doc), 'KEEPTTL')
local entry = {at = now, who = who, action = action, from = from, to = to, note = note}
if action == 'assign' then entry.assignee = ARGV[5] end
if action == 'resolve' then entry.disposition = ARGV[6] end
redis.call('RPUSH', KEYS[2], cjson.encode(entry))
redis.call('PUBLISH', ARGV[7], cjson.encode({alert_id = doc.alert_id, change = action, status = to,
  severity = doc.severity, customer_id = doc.customer_id, count = doc.count, who = who, at = now}))
return {'ok', cjson.encode(doc)}
