"""The Cloud Function orchestrator the Sluice README compares itself with, rebuilt from the article's
description (docs/benchmarks.md, "Sluice vs the Cloud Function"): a benchmark peer, not production code.

A Pub/Sub push of the log sink's "Worker pool stopped." LogEntry arrives; the function sleeps a fixed 30 s
(the article's answer to the Dataflow API lagging behind the logs), decodes the base64 LogEntry, maps the job
name (before "--") to its step in a Step-Functions-like DAG dict, asks the API whether the job succeeded,
calls the next step's parameter function and launches that step's Flex Template as "<job_name>--<epoch
second>". No state, no deduplication, no retries of its own, no auth on the endpoint (as in the article).

Environment:
  PEER_DATAFLOW_URL  base URL of the Dataflow API (here: `sluice emulator`), e.g. http://127.0.0.1:8089/
  PEER_SLEEP_S       the fixed sleep before anything else, seconds (default 30, the article's; 0 = off)
  PEER_PROJECT / PEER_REGION   default my-project / europe-west4 (those of workflows/example.lua)
The API is called without credentials (the emulator runs with --no-auth, as for Sluice in the benchmark).
"""
import base64
import inspect
import json
import os
import sys
import threading
import time

import httplib2
from flask import Flask, request
from googleapiclient import discovery
from googleapiclient.errors import HttpError

PROJECT = os.environ.get("PEER_PROJECT", "my-project")
REGION = os.environ.get("PEER_REGION", "europe-west4")
SLEEP_S = float(os.environ.get("PEER_SLEEP_S", "30"))
SUFFIX_SEPARATOR = "--"

dag = {
    "start": "Start",
    "steps": {
        "Start": {"job_name": "start", "function": "start", "next": "Step1"},
        "Step1": {"job_name": "my-job-1", "template": "gs://my-bucket/my-job-1/python_command_spec.json",
                  "function": "trigger_my_job_1", "next": "Step2"},
        "Step2": {"job_name": "my-job-2", "template": "gs://my-bucket/my-job-2/python_command_spec.json",
                  "function": "trigger_my_job_2", "next": "Step3"},
        "Step3": {"job_name": "my-job-3", "template": "gs://my-bucket/my-job-3/python_command_spec.json",
                  "function": "trigger_my_job_3", "next": "End"},
        "End": {"job_name": "end", "function": "stop"},
    },
}


def add_common_params(**kwargs):
    kwargs["parameters"]["setup_file"] = "/dataflow/template/setup.py"
    return kwargs


def start(**kwargs):
    return kwargs


def trigger_my_job_1(**kwargs):
    return add_common_params(parameters={"my_job_1_param_1": "value_1", "my_job_1_param_2": "value_2"}, **kwargs)


def trigger_my_job_2(**kwargs):
    return add_common_params(parameters={"my_job_2_param_1": "value_1"}, **kwargs)


def trigger_my_job_3(**kwargs):
    return add_common_params(parameters={"my_job_3_param_1": "value_1"}, **kwargs)


def stop(**kwargs):
    print(f"workflow complete ({kwargs.get('previous_job')})", flush=True)
    return None


# Derived once per process, as the article does: job name -> step, and the step functions by name.
_job_names_to_steps = {s["job_name"]: name for name, s in dag["steps"].items() if "job_name" in s}
_function_names = {s["function"] for s in dag["steps"].values() if "function" in s}
functions = {name: obj for name, obj in inspect.getmembers(sys.modules[__name__])
             if inspect.isfunction(obj) and obj.__module__ == __name__ and name in _function_names}


def get_next_job(current_job_name):
    """The next step's launch arguments for a finished job, or None (not ours, or the DAG's end)."""
    base_name = current_job_name.split(SUFFIX_SEPARATOR)[0]
    step_name = _job_names_to_steps.get(base_name)
    if not step_name:
        return None
    next_step_name = dag["steps"][step_name].get("next")
    if not next_step_name:
        return None
    next_step = dag["steps"][next_step_name]
    job_name = f"{next_step['job_name']}{SUFFIX_SEPARATOR}{int(time.time())}"
    return functions[next_step["function"]](job_name=job_name, template_location=next_step.get("template"),
                                            previous_job=current_job_name)


# One API client per gunicorn thread: an httplib2.Http (and so a client built on it) is not thread-safe.
_DISCOVERY_DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dataflow-v1b3-discovery.json")
with open(_DISCOVERY_DOC) as f:
    _doc = json.load(f)
_doc["rootUrl"] = os.environ["PEER_DATAFLOW_URL"].rstrip("/") + "/"  # required: never the real API
_local = threading.local()


def dataflow():
    if not hasattr(_local, "client"):
        _local.client = discovery.build_from_document(_doc, http=httplib2.Http(timeout=60))
    return _local.client


app = Flask(__name__)


@app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
@app.route("/<path:path>", methods=["GET", "POST"])
def orchestrate(path):
    if request.method == "GET":  # a Cloud Function answers any request; GET is the benchmark's readiness probe
        return "ok\n"
    if SLEEP_S > 0:
        time.sleep(SLEEP_S)  # "give some time for the API to get the latest updates"
    envelope = request.get_json(force=True)
    entry = json.loads(base64.b64decode(envelope["message"]["data"]))
    # The log sink's filter (textPayload="Worker pool stopped.") lives in Cloud Logging, not in the function;
    # the emulator posts every job message of a finished job, so the filter is applied here instead.
    if entry.get("textPayload") != "Worker pool stopped.":
        return "ok\n"
    labels = entry["resource"]["labels"]
    next_job = get_next_job(labels["job_name"])
    if next_job is None or next_job.get("template_location") is None:
        return "ok\n"  # not in the DAG (every project's jobs reach the function), or the End was reached
    # "Worker pool stopped." is logged for failed and cancelled jobs too: ask the API how the job ended.
    job = dataflow().projects().locations().jobs().get(
        projectId=PROJECT, location=REGION, jobId=labels["job_id"]).execute()
    if job.get("currentState") != "JOB_STATE_DONE":
        print(f"{labels['job_name']} is {job.get('currentState')}: not triggering the next step", flush=True)
        return "ok\n"
    # An HttpError here (409: the same name launched in the same second) is not caught, as in the article:
    # the function fails with 500 and Pub/Sub delivers the event again.
    dataflow().projects().locations().flexTemplates().launch(
        projectId=PROJECT, location=REGION,
        body={"launchParameter": {"jobName": next_job["job_name"], "parameters": next_job["parameters"],
                                  "containerSpecGcsPath": next_job["template_location"]}}).execute()
    return "ok\n"


@app.errorhandler(HttpError)
def api_error(e):
    print(f"Dataflow API error: {e}", file=sys.stderr, flush=True)
    return "error\n", 500
