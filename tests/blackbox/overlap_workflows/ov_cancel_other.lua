-- Hourly, overlap = "cancel_other", one long Dataflow job per run: test_schedule_overlap ticks it by hand, an hour at a time.
return {
  name = "ov_cancel_other",
  project = "ov-project",
  region = "europe-west1",
  schedule = { cron = "0 * * * *", catchup = "1d", overlap = "cancel_other" },
  environment = { tempLocation = "gs://ov-bucket/tmp" },
  start = "Work",
  steps = {
    Work = { job_name = "ov-cancel-other", template = "gs://ov-bucket/templates/work.json" },
  },
}
