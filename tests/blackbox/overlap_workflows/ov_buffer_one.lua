-- Hourly, overlap = "buffer_one", one long Dataflow job per run: test_schedule_overlap ticks it by hand, an hour at a time.
return {
  name = "ov_buffer_one",
  project = "ov-project",
  region = "europe-west1",
  schedule = { cron = "0 * * * *", catchup = "1d", overlap = "buffer_one" },
  environment = { tempLocation = "gs://ov-bucket/tmp" },
  start = "Work",
  steps = {
    Work = { job_name = "ov-buffer-one", template = "gs://ov-bucket/templates/work.json" },
  },
}
