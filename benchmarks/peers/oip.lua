-- wrk script: POST one OIP v2 inference request over and over, and check every answer.
--
--   wrk -s oip.lua URL -- BODY_FILE EXPECTED_CLASS CLASSES [HEADER_LENGTH]
--
-- BODY_FILE holds the request body (JSON, or JSON + raw tensor bytes with the binary tensor extension, in
-- which case HEADER_LENGTH is the JSON part's length). A non-200 answer is counted as such; a 200 is wrong
-- unless its output "logits" holds CLASSES numbers in JSON with the largest at EXPECTED_CLASS (0-based).
-- done() prints one line: WRK_RESULT {json}.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[1], "rb"))
   wrk.body = file:read("*a")
   file:close()
   expected = tonumber(args[2])
   classes = tonumber(args[3])
   wrk.method = "POST"
   if args[4] ~= nil and args[4] ~= "" then
      wrk.headers["Content-Type"] = "application/octet-stream"
      wrk.headers["Inference-Header-Content-Length"] = args[4]
   else
      wrk.headers["Content-Type"] = "application/json"
   end
   non200, wrong, checked = 0, 0, 0
end

-- the index of the largest number in the "data" array (flat or nested) of the output named "logits", or -1
-- when there is no such output or it does not hold `classes` numbers
local function answer(body)
   local outputs = body:match('"outputs"%s*:%s*(%b[])')
   if outputs == nil then
      return -1
   end
   local data = nil
   for output in outputs:gmatch("%b{}") do
      if output:find('"name"%s*:%s*"logits"') then
         data = output:match('"data"%s*:%s*(%b[])')
         break
      end
   end
   if data == nil then
      return -1
   end
   local best, best_index, count = -math.huge, -1, 0
   for token in data:gmatch("[^%[%],%s]+") do
      local value = tonumber(token)
      if value == nil then
         return -1
      end
      if value > best then
         best, best_index = value, count
      end
      count = count + 1
   end
   if count ~= classes then
      return -1
   end
   return best_index
end

function response(status, headers, body)
   checked = checked + 1
   if status ~= 200 then
      non200 = non200 + 1
   elseif answer(body) ~= expected then
      wrong = wrong + 1
   end
end

function done(summary, latency, requests)
   local totals = { non200 = 0, wrong = 0, checked = 0 }
   for _, thread in ipairs(threads) do
      for name, _ in pairs(totals) do
         totals[name] = totals[name] + thread:get(name)
      end
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "socket_errors": %d, '
      .. '"non200": %d, "wrong": %d, "checked": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.timeout, totals.non200, totals.wrong, totals.checked))
end
