-- The web UI test's retries and failing streak (tests/blackbox/test_ui.sh): with mode "retry", Flaky's first two
-- jobs fail (the emulator's config) and the third succeeds, so the run page shows three attempts; with mode
-- "broken", Broken's job always fails, so the workflow's grid shows a failing streak.
return {
  name = "flaky",
  project = "ui-project",
  region = "europe-west1",
  environment = { tempLocation = "gs://ui-bucket/tmp" },
  params = {
    mode = { required = true, description = "retry (Flaky fails twice, then succeeds) or broken (Broken fails)" },
  },
  start = "Prep",
  steps = {
    Prep = {
      job_name = "ui-prep",
      template = "gs://ui-bucket/templates/load.json",
      next = function(ctx)
        if ctx.run.params.mode == "broken" then return "Broken" end
        return "Flaky"
      end,
      choices = { "Flaky", "Broken" },
    },
    Flaky = { job_name = "ui-flaky", template = "gs://ui-bucket/templates/report.json", retry = { attempts = 3, backoff = 1 } },
    Broken = { job_name = "ui-broken", template = "gs://ui-bucket/templates/report.json" },
  },
}
