-- The web UI test's workflow: declared params (the start form), a hook start, fan-out, a join with a choice,
-- on_failure, and a load step the emulator fails on its first attempt (tests/blackbox/test_ui.sh).
return {
  name = "uitest",
  project = "ui-project",
  region = "europe-west1",
  environment = { tempLocation = "gs://ui-bucket/tmp" },
  params = {
    mode = { required = true, description = "full, quick or bad (a report job that fails once)" },
    day = { default = "2026-05-01", description = "the day to load" },
  },
  start = "Start",
  steps = {
    Start = { job_name = "ui-start", next = "Load" },
    Load = {
      job_name = "ui-load",
      template = "gs://ui-bucket/templates/load.json",
      ["function"] = function(ctx) return { day = ctx.run.params.day, mode = ctx.run.params.mode } end,
      next = { "CleanA", "CleanB" },
    },
    CleanA = { job_name = "ui-clean-a", template = "gs://ui-bucket/templates/clean.json", next = "Join" },
    CleanB = { job_name = "ui-clean-b", template = "gs://ui-bucket/templates/clean.json", next = "Join" },
    Join = {
      job_name = "ui-join",
      template = "gs://ui-bucket/templates/join.json",
      next = function(ctx)
        if ctx.run.params.mode == "full" then return "Full" end
        if ctx.run.params.mode == "bad" then return "Bad" end
        return "Quick"
      end,
      choices = { "Full", "Quick", "Bad" },
    },
    Bad = { job_name = "ui-bad", template = "gs://ui-bucket/templates/report.json" },
    Full = { job_name = "ui-full", template = "gs://ui-bucket/templates/report.json", on_failure = "Notify" },
    Quick = { job_name = "ui-quick", template = "gs://ui-bucket/templates/report.json", on_failure = "Notify" },
    Notify = { job_name = "ui-notify", template = "gs://ui-bucket/templates/notify.json" },
  },
}
