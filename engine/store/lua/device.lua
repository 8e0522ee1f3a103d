-- Beacon device customers, on a Redis Cluster only (engine/store/layout.py): the
-- customers seen on a device in the last 24 hours, updated beside the ingest call since
-- the device's key is in another slot than the customer's. On one Redis, ingest.lua does
-- the same inside its own call (device_customers).
-- KEYS[1] the device's key; ARGV: customer id, event ts, bound. Returns the count.
-- GT: a repeat of an event, or an older one arriving late, never moves a customer's
-- last time back, so a redelivery changes nothing.
local k, cid, ts, bound = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZADD', k, 'GT', ts, cid)
redis.call('ZREMRANGEBYSCORE', k, '-inf', ts - 86400)
redis.call('EXPIRE', k, 172800)
local n = redis.call('ZCOUNT', k, ts - 86400, '+inf')
if redis.call('ZCARD', k) > bound then
  redis.call('ZREMRANGEBYRANK', k, 0, -(bound + 1))
end
if n > bound then return bound end
return n
