-- wrk script for POST /v1/decisions: a new, valid interaction event per request.
--
--   wrk -t2 -c16 -d15s --latency -s loadtest/wrk.lua http://127.0.0.1:6066 -- RUN 5000
--
-- Arguments after "--": a run id (event ids are "wrk-<run>-<thread>-<n>", so they never
-- repeat across wrk's threads nor, given a fresh run id, across runs; without one the
-- start time and a random number stand in) and the number of customers (default 5,000:
-- C000000..C004999, the ids of engine.ops.traffic.Population, whose profiles
-- loadtest.wrkbench imports first so offers are eligible). Channels, event types and
-- amounts follow engine.ops.traffic's mix; ts is now (whole seconds: all wrk's Lua has).
-- Valid as engine/domain/events.py defines it: ids of [A-Za-z0-9_.:@/-], a configured
-- channel and type, ts within the allowed skew, a non-negative amount with a currency.

local threads = 0
local channels = {
  {"mobile", 0.5, {{"login", 0.35}, {"balance_inquiry", 0.2}, {"transfer", 0.15},
                   {"card_payment", 0.15}, {"page_view", 0.15}}},
  {"internet", 0.3, {{"login", 0.3}, {"page_view", 0.3}, {"transfer", 0.15},
                     {"bill_payment", 0.15}, {"product_view", 0.1}}},
  {"atm", 0.2, {{"withdrawal", 0.5}, {"balance_inquiry", 0.3}, {"deposit", 0.15},
                {"pin_failure", 0.05}}},
}
local amount_means = {withdrawal = 80, deposit = 300, transfer = 250, bill_payment = 90,
                      card_payment = 45}
local headers = {["Content-Type"] = "application/json"}

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  run = args[1] or string.format("%d-%d", os.time(), math.random(1, 1000000))
  customers = tonumber(args[2] or "5000")
  math.randomseed(os.time() * 1000 + tid)
  counter = 0
end

local function pick(items)
  local r, acc = math.random(), 0
  for _, item in ipairs(items) do
    acc = acc + item[2]
    if r < acc then return item end
  end
  return items[#items]
end

function request()
  counter = counter + 1
  local ch = pick(channels)
  local channel, etype = ch[1], pick(ch[3])[1]
  local cid = string.format("C%06d", math.random(0, customers - 1))
  local fields = {
    string.format('"event_id":"wrk-%s-%d-%d","customer_id":"%s","channel":"%s","type":"%s","ts":%d',
                  run, tid, counter, cid, channel, etype, os.time()),
  }
  local lat, lon = 51.5074 + (math.random() - 0.5) / 10, -0.1278 + (math.random() - 0.5) / 10
  if channel == "atm" then
    fields[#fields + 1] = string.format('"terminal_id":"ATM-LON-%03d"', math.random(1, 40))
  else
    fields[#fields + 1] = string.format('"device_id":"%s-dev0","session_id":"s-%08x"',
                                        cid, math.random(0, 0x7fffffff))
  end
  if channel ~= "internet" then
    fields[#fields + 1] = string.format('"geo":{"lat":%.5f,"lon":%.5f}', lat, lon)
  end
  local mean = amount_means[etype]
  if mean then
    local amount = -mean * math.log(1 - math.random()) + 1
    fields[#fields + 1] = string.format('"amount":%.2f,"currency":"GBP"', amount)
  end
  return wrk.format("POST", "/v1/decisions", headers, "{" .. table.concat(fields, ",") .. "}")
end
