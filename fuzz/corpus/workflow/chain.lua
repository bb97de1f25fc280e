-- Three jobs in a row: the black-box lag tests time each hand-over.
return {
  name = "chain",
  project = "p",
  region = "europe-west1",
  start = "A",
  steps = {
    A = { job_name = "chain-a", template = "gs://bkt/a.json", next = "B" },
    B = { job_name = "chain-b", template = "gs://bkt/b.json", next = "C" },
    C = { job_name = "chain-c", template = "gs://bkt/c.json" },
  },
}
