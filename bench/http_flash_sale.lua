-- wrk script for bench.http_flash_sale: every request a hold of one piece of the hot product, with an
-- Idempotency-Key of its own; counts the holds decided within ?wait= (201) per thread.
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  decided = 0
  token = os.getenv("BENCH_TOKEN") or ""
  sku = os.getenv("BENCH_SKU") or "HTTP-HOT"
  run = os.getenv("BENCH_RUN") or "r"
  body = '{"lines": [{"sku": "' .. sku .. '", "quantity": "1", "unit": "piece"}]}'
end

function request()
  counter = counter + 1
  local key = string.format("%s-%d-%d", run, id, counter)
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = key,
  }
  return wrk.format("POST", wrk.path, headers, body)
end

function response(status, headers, body)
  if status == 201 then
    decided = decided + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("decided")
  end
  io.write(string.format("DECIDED %d\n", total))
end
