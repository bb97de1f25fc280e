-- One Dataflow job per run: the quota and job-pool tests start fifty of these at once.
return {
  name = "burst",
  project = "quota-project",
  region = "europe-west1",
  environment = { tempLocation = "gs://quota-bucket/tmp" },
  start = "Work",
  steps = {
    Work = { job_name = "burst-work", template = "gs://quota-bucket/templates/work.json" },
  },
}
