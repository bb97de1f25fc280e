-- Hourly, overlap = "skip", one long Dataflow job per run: test_schedule_overlap ticks it by hand, an hour at a time.
return {
  name = "ov_skip",
  project = "ov-project",
  region = "europe-west1",
  schedule = { cron = "0 * * * *", catchup = "1d", overlap = "skip" },
  environment = { tempLocation = "gs://ov-bucket/tmp" },
  start = "Work",
  steps = {
    Work = { job_name = "ov-skip", template = "gs://ov-bucket/templates/work.json" },
  },
}
