-- Two parallel branches; when one fails the run fails and the other's job is cancelled.
return {
  name = "siblings",
  project = "p",
  region = "europe-west1",
  on_run_failure = "cancel",
  start = "Split",
  steps = {
    Split = { job_name = "sib-split", next = { "Quick", "Long" } },
    Quick = { job_name = "sib-quick", template = "gs://bkt/q.json" },
    Long = { job_name = "sib-long", template = "gs://bkt/l.json" },
  },
}
