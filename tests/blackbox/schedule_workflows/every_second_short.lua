-- As every_second.lua, with a catchup of 3 s: after an outage longer than that, the older missed times are skipped.
dag = {
  name = "every_second_short",
  schedule = { cron = "* * * * * *", timezone = "Europe/Amsterdam", catchup = "3s", overlap = "allow" },
  start = "Note",
  steps = {
    Note = { ["function"] = "note" },
  },
}

function note(ctx)
  return { logical_time = ctx.run.logical_time, start = ctx.run.interval.start, ["end"] = ctx.run.interval["end"] }
end
