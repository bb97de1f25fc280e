-- wrk script for `sluice serve`: authenticated Pub/Sub push deliveries (wrapped body, base64 LogEntry) with a
-- pre-signed OIDC token and a unique message id and job id per request, so every event is new and must be
-- durably recorded. Usage: wrk ... -s bench/serve_push.lua URL -- TOKEN [JOB_PREFIX]
-- JOB_PREFIX "my-job-1" (default) is a job of the shipped example workflow; anything else is a foreign job
-- (verified and acknowledged, never written).
local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  return ((s:gsub('.', function(x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ '', '==', '=' })[#s % 3 + 1])
end

local threads = {}
local next_id = 1
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local token, prefix, counter, run = nil, nil, 0, nil
-- The LogEntry is split so that its constant head has a length divisible by 3: base64(head .. tail) is then
-- base64(head) .. base64(tail), and only the short tail is encoded per request.
local head, head64
function init(args)
  token = args[1]
  prefix = args[2] or "my-job-1"
  run = string.format("%d%d", os.time() % 100000, tid)
  head = '{"textPayload":"Worker pool stopped.","severity":"INFO","logName":"projects/p/logs/dataflow.googleapis.com%2Fjob-message","resource":{"type":"dataflow_step","labels":{"step_id":"","project_id":"123","region":"europe-west4","job_name":"' .. prefix .. '--bench-1",'
  while #head % 3 ~= 0 do head = head .. ' ' end
  head64 = b64(head)
end

function request()
  counter = counter + 1
  local jid = string.format("2026-11-27_00_00_00-%s%09d", run, counter)
  local tail = '"job_id":"' .. jid .. '"}},"timestamp":"2026-11-27T03:08:00.912Z"}'
  local body = '{"message":{"data":"' .. head64 .. b64(tail) .. '","messageId":"b' .. run .. '-' .. counter ..
    '","publishTime":"2026-11-27T03:08:01.402Z"},"subscription":"projects/p/subscriptions/bench"}'
  return wrk.format("POST", "/v1/events/pubsub",
    { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }, body)
end

local non2xx = 0
function response(status, headers, body)
  if status ~= 200 then
    non2xx = non2xx + 1
    if non2xx < 3 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
  end
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n", latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
