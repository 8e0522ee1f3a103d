-- A profile change and its history entry in one step (engine/store/state.py swap_profile).
-- KEYS[1]: the profile, KEYS[2]: its history list (one customer: one slot).
-- ARGV: the profile expected now ("" for none), the new profile, the history entry,
-- ttl (s), entries kept. Compare-and-set: a profile changed meanwhile (another CRM write)
-- is not overwritten; the caller reads it again and re-applies its patch. Returns 1 or 0.
local now = redis.call('GET', KEYS[1])
if (now or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[4])
redis.call('LPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
