-- Deliberately invalid: the workflows page must list its problems with file:line.
return {
  name = "broken",
  project = "ui-project",
  region = "europe-west1",
  start = "First",
  steps = {
    First = { job_name = "broken-first", template = "gs://ui-bucket/templates/x.json", next = "Nowhere" },
  },
}
