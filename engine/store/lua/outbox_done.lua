-- Beacon outbox: entries delivered, acknowledged and deleted in one step (engine/store/outbox.py).
-- One stream (one slot), so it runs on one Redis and on a Redis Cluster alike, where a
-- MULTI through redis-py's cluster pipeline cost the relay more than the delivery did.
-- KEYS[1] the stream; ARGV[1] the group; ARGV[2..] the entry ids. Returns how many were deleted.
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
