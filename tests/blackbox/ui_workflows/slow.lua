-- A one-job workflow whose job the UI test's emulator keeps running for ten minutes: runs that stay running
-- (the Gantt in progress) and that the page cancels.
return {
  name = "slow",
  project = "ui-project",
  region = "europe-west1",
  environment = { tempLocation = "gs://ui-bucket/tmp" },
  start = "Work",
  steps = {
    Work = { job_name = "slow-work", template = "gs://ui-bucket/templates/slow.json", next = "After" },
    After = { job_name = "slow-after", template = "gs://ui-bucket/templates/after.json" },
  },
}
