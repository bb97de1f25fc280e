-- Fan-out, join, choice, on_failure and retry in one daily pipeline:
--   Start -> ingest -> (clean-orders | clean-customers) -> join -> choose: full or quick report -> End
-- A failed clean step is retried; if the report fails, notify-failure runs instead.
return {
  name = "daily",
  project = "my-project",
  region = "europe-west4",
  environment = {
    tempLocation = "gs://my-bucket/tmp",
    maxWorkers = 20,
    additionalUserLabels = { team = "data" },
  },
  labels = { cost_center = "analytics" },
  start = "Start",
  steps = {
    Start = { job_name = "daily-start", next = "Ingest" },
    Ingest = {
      job_name = "daily-ingest",
      template = "gs://my-bucket/templates/ingest.json",
      ["function"] = function(ctx)
        return { input = "gs://my-bucket/landing/" .. (ctx.run.params.date or sluice.date("%Y-%m-%d", ctx.run.started_at)) .. "/*" }
      end,
      timeout = "2h",
      next = { "CleanOrders", "CleanCustomers" },   -- fan-out: both run in parallel
    },
    CleanOrders = {
      job_name = "daily-clean-orders",
      template = "gs://my-bucket/templates/clean.json",
      parameters = { table = "orders" },
      retry = { attempts = 3, backoff = "1m" },
      next = "Join",
    },
    CleanCustomers = {
      job_name = "daily-clean-customers",
      template = "gs://my-bucket/templates/clean.json",
      parameters = { table = "customers" },
      retry = 2,
      next = "Join",
    },
    Join = {                                         -- two predecessors: waits for both
      job_name = "daily-join",
      classic_template = "gs://my-bucket/templates/join",
      ["function"] = function(ctx)
        return {
          parameters = { orders = ctx.results.CleanOrders.job_name or "", customers = ctx.results.CleanCustomers.job_name or "" },
          environment = { machineType = "n2-standard-4" },
        }
      end,
      next = function(ctx)                          -- choice
        if ctx.run.params.full == "true" then return "FullReport" end
        return "QuickReport"
      end,
      choices = { "FullReport", "QuickReport" },
    },
    FullReport = {
      job_name = "daily-report-full",
      template = "gs://my-bucket/templates/report.json",
      parameters = { mode = "full" },
      on_failure = "NotifyFailure",
      next = "End",
    },
    QuickReport = {
      job_name = "daily-report-quick",
      template = "gs://my-bucket/templates/report.json",
      parameters = { mode = "quick" },
      on_failure = "NotifyFailure",
      next = "End",
    },
    NotifyFailure = {
      job_name = "daily-notify",
      template = "gs://my-bucket/templates/notify.json",
      ["function"] = function(ctx)
        return { message = "report failed in run " .. ctx.run.id .. ": " .. (ctx.job and ctx.job.state or "?") }
      end,
    },
    End = { job_name = "daily-end" },
  },
}
