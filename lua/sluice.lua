-- The Sluice prelude: small helpers every workflow may use, in the frozen global table `sluice`.
-- It runs once per VM before the workflow script, with the host's globals; see docs/workflows.md.
sluice = {}

-- Returns a new table with the keys of every argument, later ones winning. Nil arguments are skipped.
function sluice.merge(...)
  local out = {}
  for i = 1, select("#", ...) do
    local t = select(i, ...)
    if t ~= nil then
      for k, v in pairs(t) do out[k] = v end
    end
  end
  return out
end

-- A deep copy of plain data (tables, strings, numbers, booleans).
function sluice.copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = sluice.copy(x) end
  return out
end

-- Formats a Unix time (default: now) in UTC, e.g. sluice.date("%Y-%m-%d", ctx.run.started_at).
function sluice.date(fmt, t)
  return os.date("!" .. (fmt or "%Y-%m-%dT%H:%M:%SZ"), t)
end

-- The list of a table's keys, sorted, for deterministic iteration.
function sluice.keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out, function(a, b) return tostring(a) < tostring(b) end)
  return out
end
