-- Two runs at most at once: the max_active_runs test starts many and samples the emulator's active jobs.
return {
  name = "limited",
  project = "limit-project",
  region = "europe-west1",
  max_active_runs = 2,
  environment = { tempLocation = "gs://quota-bucket/tmp" },
  start = "Work",
  steps = {
    Work = { job_name = "limited-work", template = "gs://quota-bucket/templates/work.json" },
  },
}
