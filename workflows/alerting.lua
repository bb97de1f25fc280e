-- A chain that tells someone when it breaks: run events go to a webhook (signed with the server's
-- --notify-secret) and, once the run failed, whichever step it was, the failure handler Report runs with
-- ctx.failure = {step, error, cause, job}. The run stays failed. See docs/workflows.md ("Notifications").
dag = {
  name = "alerting",
  project = "my-project",
  region = "europe-west4",
  environment = { tempLocation = "gs://my-bucket/tmp" },
  start = "Extract",
  deadline = "2h",
  on_run_failure = "cancel",
  failure_handler = "Report",
  notify = {
    webhook = "https://hooks.example.com/sluice",
    on = { "failed", "cancelled", "deadline_missed" },
  },
  steps = {
    Extract = { job_name = "al-extract", template = "gs://my-bucket/extract/spec.json", next = "Load" },
    Load = { job_name = "al-load", template = "gs://my-bucket/load/spec.json", deadline = "45m" },
    Report = {
      job_name = "al-report",
      ["function"] = function(ctx)
        print("run " .. ctx.run.id .. " failed at " .. (ctx.failure.step or "?") .. ": " .. (ctx.failure.error or "?"))
      end,
    },
  },
}
return dag
