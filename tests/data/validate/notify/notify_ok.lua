return {
  name = "notify_ok", project = "p", region = "europe-west4", start = "A", deadline = "2h",
  failure_handler = "Alert",
  notify = { webhook = "http://[::1]:8080/h", pubsub = "projects/p/topics/t", on = { "failed", "deadline_missed" } },
  steps = {
    A = { job_name = "no-a", template = "gs://my-bucket/t.json", deadline = "30m" },
    Alert = { ["function"] = function(ctx) print(ctx.failure.step) end },
  },
}
