-- wrk script: POST /api/v1/tickets with varied bodies (channel, kind, queue, subject, body length, intent).
--   wrk -t1 -c16 -d8s --latency -s bench/wrk/create.lua http://127.0.0.1:PORT -- API_KEY [MAX_RESPONSES]
package.path = debug.getinfo(1, "S").source:sub(2):match("(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
response = common.response
done = common.done

local key = "bench-desk-key-not-for-production"  -- bench/bench_desk.py gives the service this key
local channels = { "phone", "webchat", "email", "api", "telegram" }
local kinds = { "query", "query", "query", "complaint", "suggestion" }
local intents = { "info_tramite", "cita_previa", "tasa_itv", "padron", "null" }
local words = { "Quiero", "saber", "el", "estado", "de", "mi", "solicitud", "del", "padrón", "municipal",
                "y", "la", "cita", "para", "renovar", "el", "DNI", "gracias" }
local n = 0
local prefix = ""

function init(args)
  if args[1] and args[1] ~= "" then key = args[1] end
  max_responses = tonumber(args[2] or "0") or 0
  prefix = tostring(id or 0) .. "-"
  math.randomseed(os.time() + (id or 0))
end

local function text(count)
  local out = {}
  for i = 1, count do out[i] = words[math.random(#words)] end
  return table.concat(out, " ")
end

request = function()
  n = n + 1
  local kind = kinds[(n % #kinds) + 1]
  local queue = ""
  if kind == "query" then queue = '"queue": "N1", ' end
  local intent = intents[(n % #intents) + 1]
  if intent ~= "null" then intent = '"' .. intent .. '"' end
  local body = string.format('{"channel": "%s", %s"kind": "%s", "subject": "Consulta %s%d: %s", "body": "%s", "intent": %s}',
    channels[(n % #channels) + 1], queue, kind, prefix, n, text(3), text(math.random(0, 40)), intent)
  return wrk.format("POST", "/api/v1/tickets",
    { ["X-API-Key"] = key, ["Content-Type"] = "application/json" }, body)
end
