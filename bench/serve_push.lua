-- wrk script for `sluice serve`: authenticated Pub/Sub push deliveries (wrapped body, base64 LogEntry) with a
-- pre-signed OIDC token and a unique message id and job id per request, so every event is new and must be
-- durably recorded. Usage: wrk ... -s bench/serve_push.lua URL -- TOKEN [JOB_PREFIX [JOB_ID]]
-- JOB_PREFIX "my-job-1" (default) is a job of the shipped example workflow; anything else is a foreign job
-- (verified and acknowledged, never written). JOB_ID, when given, is the job id of every event (one real
-- finished job, for bench/compare.py's Cloud Function peer, which asks the API about it); message ids stay unique.
-- Several wrk processes at once need distinct PUSH_TAG values (digits).
--
-- The client must stay cheap (it shares the CPUs with the server), so nothing is base64-encoded per request
-- but 9 digits: the LogEntry is laid out so that the varying job-id counter starts at a multiple of 3 bytes
-- and is 9 bytes long; base64(head .. digits .. tail) is then base64(head) .. base64(digits) .. base64(tail).
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local sym = {}
for i = 1, 64 do sym[i - 1] = alphabet:sub(i, i) end

local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = sym[c1] .. sym[c2] .. (b and sym[c3] or "=") .. (c and sym[c4] or "=")
  end
  return table.concat(out)
end

local next_id = 1
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

local token, counter, run, head64, tail64, fixed64, hdrs
function init(args)
  token = args[1]
  local prefix = args[2] or "my-job-1"
  if args[3] then
    fixed64 = b64('{"textPayload":"Worker pool stopped.","severity":"INFO","logName":"projects/p/logs/dataflow.googleapis.com%2Fjob-message","resource":{"type":"dataflow_step","labels":{"step_id":"","project_id":"123","region":"europe-west4","job_name":"' ..
      prefix .. '--bench-1","job_id":"' .. args[3] .. '"}},"timestamp":"2026-11-27T03:08:00.912Z"}')
  end
  run = string.format("%s%05d%d", os.getenv("PUSH_TAG") or "", os.time() % 100000, tid) -- PUSH_TAG: one per wrk process
  local head = '{"textPayload":"Worker pool stopped.","severity":"INFO","logName":"projects/p/logs/dataflow.googleapis.com%2Fjob-message","resource":{"type":"dataflow_step","labels":{"step_id":"","project_id":"123","region":"europe-west4","job_name":"' .. prefix .. '--bench-1",'
  local idstart = '"job_id":"2026-11-27_00_00_00-' .. run
  while (#head + #idstart) % 3 ~= 0 do head = head .. ' ' end
  head64 = b64(head .. idstart)
  tail64 = b64('"}},"timestamp":"2026-11-27T03:08:00.912Z"}')
  counter = 0
  hdrs = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
end

function request()
  counter = counter + 1
  local digits = string.format("%09d", counter)
  local data = fixed64 or (head64 .. b64(digits) .. tail64)
  local body = '{"message":{"data":"' .. data .. '","messageId":"b' .. run .. '-' ..
    digits .. '","publishTime":"2026-11-27T03:08:01.402Z"},"subscription":"projects/p/subscriptions/bench"}'
  return wrk.format("POST", "/v1/events/pubsub", hdrs, body)
end

local non2xx = 0
function response(status, headers, body)
  if status ~= 200 then
    non2xx = non2xx + 1
    if non2xx < 3 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
  end
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; non-2xx %d, errors %d\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
