-- wrk script: GET /api/v1/status/{ref} over the references in a file (one a line), in turn.
--   wrk -t1 -c16 -d8s --latency -s bench/wrk/lookup.lua http://127.0.0.1:PORT -- refs.txt [MAX_RESPONSES]
package.path = debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
response = common.response
done = common.done

local paths = {}
local n = 0

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then table.insert(paths, "/api/v1/status/" .. line) end
  end
  assert(#paths > 0, "no references in " .. args[1])
  max_responses = tonumber(args[2] or "0") or 0
  n = (id or 0) * 997
end

request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end
