return {
  name = "handler_bad", project = "p", region = "europe-west4", start = "A",
  failure_handler = "Nope",
  steps = { A = { job_name = "hb-a", template = "gs://my-bucket/t.json" } },
}
