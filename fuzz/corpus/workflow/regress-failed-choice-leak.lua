-- Jobs that are stopped: a long batch job (cancelled), a streaming one (drained), and one that times out.
return {
  name = "stops",
  project = "p",
  region = "europe-west1",
  start = "Pick",
  steps = {
    Pick = {
      job_name = "stops-pick",
      next = function(ctx) return crx.tun.params.kind or "Long" end,
      choices = { "Long", "Stream", "Slow" },
    },
    Long = { job_name = "stops-long", template = "gs://bkt/long.json" },
    Stream = {
      job_name = "stops-stream",
      template = "gs://bkt/stream.json",
      parameters = { streaming = "true" },
      on_cancel = "drain",
      success = { "DONE", "DRAINED" },
    },
    Slow = { job_name = "stops-slow", template = "gs://bkt/slow.json", parameters = { streaming = "true" },
             timeout = 4, on_cancel = "drain",
             success = { "DONE", "DRAINED" } },
  },
}
