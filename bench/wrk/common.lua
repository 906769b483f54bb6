-- Shared by create.lua and lookup.lua: status-code counts per thread, a bound on the number of responses,
-- and a JSON summary (percentiles from wrk's own latency histogram) printed by done().
local M = {}

local threads = {}

function M.setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

-- per-thread state (each wrk thread runs its own Lua interpreter)
codes = {}
responses = 0
max_responses = 0

function M.response(status)
  codes[status] = (codes[status] or 0) + 1
  responses = responses + 1
  if max_responses > 0 and responses >= max_responses then
    wrk.thread:stop()
  end
end

local function pct(latency, p)
  return latency:percentile(p) / 1000.0
end

function M.done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    local c = t:get("codes") or {}
    for k, v in pairs(c) do
      all[k] = (all[k] or 0) + v
    end
  end
  local parts = {}
  for k, v in pairs(all) do
    table.insert(parts, string.format('"%d": %d', k, v))
  end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "non2xx": %d, "p50_ms": %.3f, "p75_ms": %.3f, "p90_ms": %.3f, ' ..
    '"p99_ms": %.3f, "p999_ms": %.3f, "max_ms": %.3f, "mean_ms": %.3f, "codes": {%s}}\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, summary.errors.status, pct(latency, 50), pct(latency, 75),
    pct(latency, 90), pct(latency, 99), pct(latency, 99.9), latency.max / 1000.0, latency.mean / 1000.0,
    table.concat(parts, ", ")))
end

return M
