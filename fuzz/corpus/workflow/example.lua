-- The original three-job chain, ported from the Cloud Function's DAG dict as literally as Lua allows:
-- Start -> my-job-1 -> my-job-2 -> my-job-3 -> End, one trigger_my_job_N function per step and a shared
-- add_common_params. `function` is a Lua keyword, hence ["function"] = "...".
dag = {
  name = "example",
  project = "my-project",
  region = "europe-west4",
  environment = {
    tempLocation = "gs://my-bucket/tmp",
    maxWorkers = 10,
    serviceAccountEmail = "dataflow-worker@my-project.iam.gserviceaccount.com",
  },
  start = "Start",
  steps = {
    Start = {
      job_name = "start",
      ["function"] = "start",
      next = "Step1",
    },
    Step1 = {
      job_name = "my-job-1",
      template = "gs://my-bucket/my-job-1/python_command_spec.json",
      ["function"] = "trigger_my_job_1",
      next = "Step2",
    },
    Step2 = {
      job_name = "my-job-2",
      template = "gs://my-bucket/my-job-2/python_command_spec.json",
      ["function"] = "trigger_my_job_2",
      next = "Step3",
    },
    Step3 = {
      job_name = "my-job-3",
      template = "gs://my-bucket/my-job-3/python_command_spec.json",
      ["function"] = "trigger_my_job_3",
      next = "End",
    },
    End = {
      job_name = "end",
      ["function"] = "stop",
    },
  },
}

-- Adds the parameters every job shares.
function add_common_params(parameters)
  parameters.setup_file = "/dataflow/template/setup.py"
  return parameters
end

function start(ctx)
  print("run " .. ctx.run.id .. " of " .. ctx.run.workflow .. " starts")
end

function trigger_my_job_1(ctx)
  return add_common_params {
    my_job_1_param_1 = "value_1",
    my_job_1_param_2 = "value_2",
  }
end

function trigger_my_job_2(ctx)
  return add_common_params {
    my_job_2_param_1 = "value_1",
  }
end

function trigger_my_job_3(ctx)
  -- Parameters can be computed from the run: here, the job that just finished and the run's start date.
  return add_common_params {
    my_job_3_param_1 = "value_1",
    previous_job = ctx.job and ctx.job.name or "",
    run_date = sluice.date("%Y-%m-%d", ctx.run.started_at),
  }
end

function stop(ctx)
  print("run " .. ctx.run.id .. " is complete")
end
