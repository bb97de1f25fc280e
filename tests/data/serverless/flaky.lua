-- flaky: one Dataflow job retried after a 30 s backoff (test_scale_to_zero: the emulator fails its first
-- attempt, so only the reconcile tick can launch the second one on a server with CPU only during requests).
return {
  name = "flaky",
  project = "my-project",
  region = "europe-west4",
  start = "Load",
  steps = {
    Load = {
      job_name = "flaky-load",
      template = "gs://my-bucket/templates/load.json",
      retry = { attempts = 2, backoff = "30s" },
    },
  },
}
