-- A daily schedule with one Dataflow job per run: the backfill test's --max-active and --rerun part.
return {
  name = "daily_job",
  project = "bf-project",
  region = "europe-west1",
  schedule = { cron = "0 6 * * *", timezone = "UTC" },
  environment = { tempLocation = "gs://bf-bucket/tmp" },
  start = "Work",
  steps = {
    Work = { job_name = "daily-job", template = "gs://bf-bucket/templates/work.json" },
  },
}
