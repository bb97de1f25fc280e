-- "At 03:00 in Amsterdam, process the day before": a daily schedule whose hook reads the run's logical time and
-- interval, as a parameter function would. The backfill test runs it over a year.
dag = {
  name = "nightly",
  schedule = { cron = "0 3 * * *", timezone = "Europe/Amsterdam", catchup = "3d", overlap = "allow" },
  start = "Process",
  steps = {
    Process = { ["function"] = "process" },
  },
}

function process(ctx)
  return { day = string.sub(ctx.run.interval.start, 1, 10), logical_time = ctx.run.logical_time }
end
