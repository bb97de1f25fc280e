-- Twelve distinct problems in one workflow (issue 8 item 12): `sluice validate` must report every one of them,
-- each with its file:line, including the ones on steps declared on a single line. The exact lines are asserted
-- by tests/unit/test_workflow.c (test_bad_twelve_at_once) and tests/blackbox/test_cli.sh: keep them in step.
local function params(ctx) return { input = ctx.job.name } end

dag = {
  name = "twelve",
  region = "europe-west4",
  labels = { Team = "data" },                      -- a label key with a capital letter
  start = "Ingest",
  steps = {
    Ingest = {
      job_name = "ingest",
      template = "gs://bucket/ingest.json",
      ["function"] = params,
      next = { "Clean", "Missing", "Pick" },       -- 'Missing' does not exist
      retry = {
        attempts = 0,                              -- out of 1..100
      },
    },
    Clean = {
      job_name = "clean",
      template = "gs://bucket/clean.json",
      on_failure = "Nowhere",                      -- does not exist
      timeout = "10 minutes",                      -- not a duration
      next = "Report",
    },
    Report = {
      job_name = "report", template = "gs://bucket/report.json",
      next = { "Clean", "Notify" },                -- back to Clean: a cycle
      tempalte = "gs://bucket/typo.json",               -- a typo: unknown field
      on_cancel = "stop",                          -- neither cancel nor drain
    },
    Notify = { timeout = 60 },                     -- a hook (no template) with a launch field
    Orphan = { job_name = "clean", template = "gs://bucket/o.json" }, Pick = { next = function(ctx) return "Report" end },
  },
}
