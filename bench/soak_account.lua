-- soak_account: the JSON side of bench/soak.sh (lua5.4 + lua-cjson, the project's own dependencies).
--   lua5.4 soak_account.lua get FILE EXPR      prints a Lua expression over d = the JSON in FILE ("" for nil)
--   lua5.4 soak_account.lua account RUNS RUNS_JSONL CANCELS STATS LOAD_END
--       RUNS: "id workflow started_at_s" per line; RUNS_JSONL: GET /v1/runs/{id} per line; CANCELS: "id
--       already_finished" per line; STATS: the emulator's /emulator/stats; LOAD_END: when the load stopped (s).
--       Prints the accounting and exits 1 when a run or a job is unaccounted for.
local cjson = require("cjson")

local function read(path)
    local f = assert(io.open(path))
    local t = f:read("a")
    f:close()
    return t
end

local function lines(path)
    local out = {}
    for l in io.lines(path) do if l ~= "" then out[#out + 1] = l end end
    return out
end

local mode = arg[1]
if mode == "get" then
    local d = cjson.decode(read(arg[2]))
    local env = setmetatable({d = d}, {__index = _G})
    function env.len(t) if type(t) ~= "table" then return 0 end local n = 0 for _ in pairs(t) do n = n + 1 end return n end
    local v = assert(load("return " .. arg[3], "expr", "t", env))()
    if v == nil or v == cjson.null then print("") elseif type(v) == "table" then print(cjson.encode(v))
    elseif math.type(v) == "float" and math.tointeger(v) then print(math.tointeger(v)) else print(tostring(v)) end
    return
end
assert(mode == "account", "usage: soak_account.lua get FILE EXPR | account RUNS RUNS_JSONL CANCELS STATS LOAD_END")

local started = {}
for _, l in ipairs(lines(arg[2])) do
    local id, wf, t = l:match("^(%S+) (%S+) (%S+)$")
    started[#started + 1] = {id = id, wf = wf, t = tonumber(t)}
end
local views = {}
for _, l in ipairs(lines(arg[3])) do
    local ok, d = pcall(cjson.decode, l)
    if ok and type(d) == "table" and type(d.run) == "table" then views[d.run.id] = d.run end
end
local cancelled = {}
for _, l in ipairs(lines(arg[4])) do
    local id, fin = l:match("^(%S+) (%S*)$")
    if id then cancelled[id] = (fin == "true") and "already_finished" or "cancel" end
end
local stats = cjson.decode(read(arg[5]))
local load_end = tonumber(arg[6])

local problems, by_state, step_jobs, n_steps = {}, {}, {}, 0
local function problem(fmt, ...) if #problems < 20 then problems[#problems + 1] = string.format(fmt, ...) end end
local late = 0
for _, r in ipairs(started) do
    local v = views[r.id]
    if v == nil then
        problem("run %s (%s): not found", r.id, r.wf)
    else
        by_state[v.state] = (by_state[v.state] or 0) + 1
        local terminal = v.state == "succeeded" or v.state == "cancelled" or v.state == "failed"
        if not terminal then
            if r.t >= load_end - 10 then late = late + 1
            else problem("run %s (%s, started at %.1fs): still %s", r.id, r.wf, r.t, v.state) end
        elseif v.state == "failed" then
            problem("run %s (%s) failed: %s", r.id, r.wf, tostring(v.error))
        elseif cancelled[r.id] == "cancel" and v.state ~= "cancelled" and v.state ~= "succeeded" then
            problem("run %s was cancelled but is %s", r.id, v.state)
        elseif cancelled[r.id] == nil and v.state == "cancelled" then
            problem("run %s is cancelled but nobody cancelled it", r.id)
        end
        -- a step row shows its latest attempt; attempts 1..n-1 had the names <job>--<run>-1 ... (retries)
        for _, st in ipairs(v.steps or {}) do
            if type(st.job_name) == "string" then
                local base, a = st.job_name:match("^(.*)%-(%d+)$")
                a = tonumber(a)
                if base == nil or a ~= math.tointeger(st.attempt) then
                    problem("step %s of run %s: job name %s does not end in its attempt %s", st.name, r.id, st.job_name,
                        tostring(st.attempt))
                else
                    for k = 1, a do
                        local name = base .. "-" .. k
                        n_steps = n_steps + 1
                        if step_jobs[name] then problem("job name %s belongs to two steps", name) end
                        step_jobs[name] = r.id
                    end
                end
            end
        end
    end
end

local created, n_jobs, relaunched = stats.jobs_created_by_name or {}, 0, 0
for name, n in pairs(created) do
    n_jobs = n_jobs + 1
    if n ~= 1 then problem("the emulator created %d jobs named %s", n, name) end
    if not step_jobs[name] then problem("job %s belongs to no step of these runs", name) end
end
for name in pairs(step_jobs) do
    if not created[name] then problem("step job %s was never created in the emulator", name) end
end
for _, n in pairs(stats.launches_by_name or {}) do if n > 1 then relaunched = relaunched + 1 end end

local n_cancels, n_fin = 0, 0
for _, c in pairs(cancelled) do n_cancels = n_cancels + 1; if c == "already_finished" then n_fin = n_fin + 1 end end
local states = {}
for k, n in pairs(by_state) do states[#states + 1] = k .. " " .. n end
table.sort(states)
print(string.format("soak: %d runs started: %s; %d still running from the last 10 s", #started, table.concat(states, ", "), late))
print(string.format("soak: %d cancels sent (%d answered already_finished)", n_cancels, n_fin))
print(string.format("soak: %d step attempts with a job in the store, %d jobs created by the emulator, %d names launched more than once",
    n_steps, n_jobs, relaunched))
local given_up, lines_out = 0, {}
for kind, d in pairs(stats.deliveries or {}) do
    given_up = given_up + (d.given_up or 0)
    lines_out[#lines_out + 1] = string.format("%s: %d delivered, %d failed attempts, %d given up, %d duplicates, %d reordered",
        kind, d.delivered or 0, d.failed_attempts or 0, d.given_up or 0, d.duplicates or 0, d.reordered or 0)
end
table.sort(lines_out)
print("soak: emulator deliveries: " .. table.concat(lines_out, "; "))
if given_up > 0 then problem("the emulator gave up on %d deliveries", given_up) end
if (stats.delivery_queue or {}).dropped_full and stats.delivery_queue.dropped_full > 0 then
    problem("the emulator dropped %d deliveries (queue full)", stats.delivery_queue.dropped_full)
end
if #started == 0 then problem("no run started") end
if #problems == 0 then
    print("ok: every run and every job accounted for")
    os.exit(0)
end
for _, p in ipairs(problems) do print("FAIL: " .. p) end
os.exit(1)
