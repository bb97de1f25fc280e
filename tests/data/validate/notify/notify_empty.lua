return {
  name = "notify_empty", project = "p", region = "europe-west4", start = "A",
  notify = { on = {} },
  steps = { A = { job_name = "ne-a", template = "gs://my-bucket/t.json" } },
}
