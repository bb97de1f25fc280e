-- Hourly, overlap = "allow", one long Dataflow job per run: test_schedule_overlap ticks it by hand, an hour at a time.
return {
  name = "ov_allow",
  project = "ov-project",
  region = "europe-west1",
  schedule = { cron = "0 * * * *", catchup = "1d", overlap = "allow" },
  environment = { tempLocation = "gs://ov-bucket/tmp" },
  start = "Work",
  steps = {
    Work = { job_name = "ov-allow", template = "gs://ov-bucket/templates/work.json" },
  },
}
