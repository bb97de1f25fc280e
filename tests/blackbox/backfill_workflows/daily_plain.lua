-- No schedule: a backfill gives it one run per day (midnight UTC), the day as its interval.
dag = {
  name = "daily_plain",
  start = "Work",
  steps = {
    Work = { ["function"] = "work" },
  },
}

function work(ctx)
  return { logical_time = ctx.run.logical_time, ["end"] = ctx.run.interval["end"] }
end
