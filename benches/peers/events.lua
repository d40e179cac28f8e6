-- wrk script: POST /v1/events with EVENTS unique order placements per request, on SKUS
-- SKUs at random (HOT=1: all on one SKU). Every idempotency key is unique (thread id and
-- counter, and ROUND: a second run against the same lockstep gives another), so every
-- event is applied and made durable, none is a duplicate.
local events = tonumber(os.getenv("EVENTS") or "1")
local skus = tonumber(os.getenv("SKUS") or "10000")
local hot = os.getenv("HOT") == "1"
local round = os.getenv("ROUND") or "0"
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

local counter = 0

function request()
  counter = counter + 1
  local parts = {}
  for i = 1, events do
    local sku = hot and 1 or math.random(1, skus)
    parts[i] = string.format(
      '{"sku":"PEER-%d","kind":"order_placed","qty":1,"order_id":"r%s-t%d-%d-%d"}',
      sku, round, id, counter, i)
  end
  local body = '{"events":[' .. table.concat(parts, ",") .. ']}'
  return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status ~= 200 then
    errors_seen = (errors_seen or 0) + 1
  end
end
