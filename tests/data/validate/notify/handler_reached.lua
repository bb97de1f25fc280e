return {
  name = "handler_reached", project = "p", region = "europe-west4", start = "A",
  failure_handler = "H",
  steps = {
    A = { job_name = "hr-a", template = "gs://my-bucket/t.json", next = "H" },
    B = { job_name = "hr-b", template = "gs://my-bucket/t.json", on_failure = "H" },
    H = { job_name = "hr-h", template = "gs://my-bucket/t.json", next = "B" },
  },
}
