return {
  name = "notify_bad", project = "p", region = "europe-west4", start = "A",
  deadline = "soon",
  notify = { webhook = "http://hooks.example.com/x", pubsub = "projects/p/subscriptions/s",
             on = { "failed", "exploded" }, email = "x" },
  steps = {
    A = { job_name = "nb-a", template = "gs://my-bucket/t.json", deadline = "-5m", next = "B" },
    B = { ["function"] = function(ctx) return nil end, deadline = "1h" },
  },
}
