-- A schedule every second (six-field cron, seconds first) with a hook step only (no Dataflow job): the schedule test
-- ticks it from three replicas that it kills at random, and checks one run per schedule time. The hook returns the
-- run's logical time and interval as its output, as a parameter function would use them.
dag = {
  name = "every_second",
  schedule = { cron = "* * * * * *", timezone = "Europe/Amsterdam", catchup = "1h", overlap = "allow" },
  start = "Note",
  steps = {
    Note = { ["function"] = "note" },
  },
}

function note(ctx)
  return { logical_time = ctx.run.logical_time, start = ctx.run.interval.start, ["end"] = ctx.run.interval["end"] }
end
