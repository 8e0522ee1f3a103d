-- One fraud verdict per transaction (engine/store/feedback.py resolve_fraud).
-- KEYS[1]: the pending-fraud sorted set, KEYS[2]: the transaction's verdict key (one slot).
-- ARGV: decision id, verdict (1 fraud, 0 legitimate), the source's rank, ttl (s).
-- The stored value is the verdict and the rank of the strongest source that gave it
-- ("12": fraud, by a chargeback); a value of one digit (written before ranks) ranks 1.
-- Only a stronger source changes a verdict: a weaker one is "outranked", an equal one
-- that disagrees "contested"; neither writes. Returns {state, verdict before or ""}.
local cur = redis.call('GET', KEYS[2])
local rank = tonumber(ARGV[3])
if cur then
  local verdict = string.sub(cur, 1, 1)
  local held = tonumber(string.sub(cur, 2)) or 1
  if verdict ~= ARGV[2] then
    if rank < held then return {'outranked', verdict} end
    if rank == held then return {'contested', verdict} end
  end
  redis.call('SET', KEYS[2], ARGV[2] .. math.max(rank, held), 'EX', ARGV[4])
  return {'was', verdict}
end
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2] .. ARGV[3], 'EX', ARGV[4])
if removed == 1 then return {'pending', ''} end
return {'settled', ''}
