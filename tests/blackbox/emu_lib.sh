# emu_lib: helpers sourced by the emulator black-box tests (not a test itself).
# Starts `sluice emulator` on an ephemeral port, waits for its ready file (polling, never a fixed sleep),
# and cleans up the process and temp files on exit.
set -euo pipefail
: "${SLUICE_BIN:?SLUICE_BIN must point at the sluice binary}"
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/emu-test.XXXXXX")
# Every bound a test waits for scales with SLUICE_TEST_TIMEOUT_MULTIPLIER (a positive integer, default 1; as
# libuv's UV_TEST_TIMEOUT_MULTIPLIER) on a slow or loaded machine. TM is it, validated.
TM=${SLUICE_TEST_TIMEOUT_MULTIPLIER:-1}
[[ "$TM" =~ ^[1-9][0-9]*$ ]] || TM=1
EMU_PIDS=()
FAILS=0

emu_cleanup() {
    for p in "${EMU_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${EMU_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    # SLUICE_TEST_KEEP=1 keeps a failed test's files (logs, stores) for a post-mortem.
    if [ "$FAILS" -ne 0 ] && [ -n "${SLUICE_TEST_KEEP:-}" ]; then echo "kept $TMPD" >&2; return; fi
    [ -n "${SLUICE_TEST_KEEP:-}" ] || rm -rf "$TMPD"
}
trap emu_cleanup EXIT

# emu_start NAME ARGS... : starts an emulator; sets B (base URL) and EMU_PID.
emu_start() {
    local name=$1; shift
    rm -f "$TMPD/$name.ready"
    "$SLUICE_BIN" emulator --port 0 --ready-file "$TMPD/$name.ready" "$@" >"$TMPD/$name.out" 2>"$TMPD/$name.err" &
    EMU_PID=$!
    EMU_PIDS+=("$EMU_PID")
    for _ in $(seq 1 $((500 * TM))); do
        [ -s "$TMPD/$name.ready" ] && break
        kill -0 "$EMU_PID" 2>/dev/null || { cat "$TMPD/$name.err" >&2; echo "emulator died" >&2; exit 1; }
        sleep 0.02
    done
    [ -s "$TMPD/$name.ready" ] || { echo "emulator not ready" >&2; exit 1; }
    B=$(tr -d '\n' <"$TMPD/$name.ready")
}

# emu_stop PID: SIGTERM and wait; fails the test if the exit code is not 0.
emu_stop() {
    local rc=0
    kill -TERM "$1"
    wait "$1" || rc=$?
    [ "$rc" -eq 0 ] || fail "emulator exited with $rc"
}

fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }

# req METHOD PATH [BODY] [extra curl args...]: prints the status code; the body lands in $TMPD/body.
req() {
    local method=$1 path=$2; shift 2
    local data=()
    if [ $# -gt 0 ]; then data=(--data-binary "$1"); shift; fi
    curl -s -o "$TMPD/body" -D "$TMPD/headers" -w '%{http_code}' -X "$method" "${data[@]}" "$@" "$B$path"
}

# jget EXPR: evaluates a Lua expression over d = the JSON in $TMPD/body (lua5.4 + lua-cjson, the project's
# own dependencies: they start in a millisecond, which keeps polling loops tight). Arrays are 1-based.
# Helpers: len(t), map(t, f), filter(t, f), count(t, f). Tables print as JSON, nil/null as "".
cat >"$TMPD/jget.lua" <<'LUA'
local cjson = require("cjson")
local f = assert(io.open(arg[1]))
local d = cjson.decode(f:read("a"))
f:close()
local function ints(t) -- lua-cjson decodes every number as a float; show 3 as 3, not 3.0
    for k, v in pairs(t) do
        if type(v) == "table" then ints(v) elseif math.type(v) == "float" and math.tointeger(v) then t[k] = math.tointeger(v) end
    end
end
if type(d) == "table" then ints(d) end
local env = setmetatable({d = d, null = cjson.null}, {__index = _G})
function env.len(t) if type(t) ~= "table" then return 0 end local n = 0 for _ in pairs(t) do n = n + 1 end return n end
function env.map(t, fn) local o = {} for i, v in ipairs(t or {}) do o[i] = fn(v) end return o end
function env.filter(t, fn) local o = {} for _, v in ipairs(t or {}) do if fn(v) then o[#o + 1] = v end end return o end
function env.count(t, fn) return #env.filter(t, fn) end
local v = assert(load("return " .. arg[2], "expr", "t", env))()
if type(v) == "table" then print(cjson.encode(v)) elseif v == nil or v == cjson.null then print("") else print(tostring(v)) end
LUA
jget() { lua5.4 "$TMPD/jget.lua" "$TMPD/body" "$1"; }

# not_once FIELD: after `req GET /emulator/stats`, how many names under d.FIELD (jobs_created_by_name,
# launches_by_name) were counted other than once; 0 when each was counted exactly once, -1 when the stats have no
# such field (nothing was counted: no test passes on that).
not_once() { jget "d.$1 == nil and -1 or count((function() local t={} for _,v in pairs(d.$1) do t[#t+1]=v end return t end)(), function(v) return v ~= 1 end)"; }

# expect_eq WHAT GOT WANT
expect_eq() { if [ "$2" == "$3" ]; then ok "$1"; else fail "$1: got '$2', want '$3'"; fi; }

# poll_until SECONDS CMD...: re-runs CMD every 20 ms until it succeeds (SECONDS scaled by TM).
poll_until() {
    local limit=$(( $1 * TM )); shift
    local end=$(( $(date +%s%N) + limit * 1000000000 ))
    while [ "$(date +%s%N)" -lt "$end" ]; do
        if "$@"; then return 0; fi
        sleep 0.02
    done
    return 1
}

finish() {
    if [ "$FAILS" -ne 0 ]; then echo "$FAILS check(s) failed" >&2; exit 1; fi
    echo "all checks passed"
}
