return {
  name = "handler_start", project = "p", region = "europe-west4", start = "A",
  failure_handler = "A",
  steps = { A = { job_name = "hs-a", template = "gs://my-bucket/t.json" } },
}
