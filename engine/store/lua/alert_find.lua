-- Beacon alert desk: one page of the inbox, newest first, in a stable order (created ms,
-- then alert id, both descending). Walks the smallest of the indexes the filter names
-- (the time index when it names none) and checks the others by membership, so a page
-- costs what it reads, at most ARGV[5] entries; a filter that matches little gives a
-- short page marked partial, with a cursor to go on from.
-- KEYS: 1 by_time zset, 2 doc-prefix, 3.. index zsets the alert must be in (id -> created ms)
-- ARGV: 1 page size, 2 highest created ms (a number or '+inf'), 3 cursor id ('' none: the
--       highest is inclusive; else only ids below it at that ms), 4 lowest created ms
--       (a number or '-inf'), 5 entries read at most
-- Returns {{next ms, next id, partial (0|1)}, doc, doc, ...}; next '' at the end.
local limit, hi, cid, lo, budget = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local driver, others = KEYS[1], {}
if #KEYS > 2 then
  local best, size = 3, redis.call('ZCARD', KEYS[3])
  for i = 4, #KEYS do
    local n = redis.call('ZCARD', KEYS[i])
    if n < size then best, size = i, n end
  end
  driver = KEYS[best]
  for i = 3, #KEYS do if i ~= best then table.insert(others, KEYS[i]) end end
end
-- Entries at the cursor's own ms that the previous page already showed are skipped.
local ties = 0
if cid ~= '' then ties = redis.call('ZCOUNT', driver, hi, hi) end
local rows = redis.call('ZRANGE', driver, hi, lo, 'BYSCORE', 'REV', 'LIMIT', 0, budget + ties, 'WITHSCORES')
local out, read, at_ms, at_id, hi_ms = {}, 0, '', '', tonumber(hi)
for i = 1, #rows, 2 do
  local id, ms = rows[i], rows[i + 1]
  if not (cid ~= '' and tonumber(ms) == hi_ms and id >= cid) then
    if read == budget then return {{at_ms, at_id, 1}, unpack(out)} end  -- budget spent: partial
    read = read + 1
    local match = true
    for _, key in ipairs(others) do
      if not redis.call('ZSCORE', key, id) then match = false break end
    end
    local raw = match and redis.call('GET', KEYS[2] .. id)  -- none: expired, index not yet trimmed
    if raw then
      if #out == limit then return {{at_ms, at_id, 0}, unpack(out)} end  -- a next page exists
      table.insert(out, raw)
    end
    at_ms, at_id = ms, id
  end
end
if #rows / 2 == budget + ties then  -- the index may go on beyond what was read
  return {{at_ms, at_id, #out < limit and 1 or 0}, unpack(out)}
end
return {{'', '', 0}, unpack(out)}
