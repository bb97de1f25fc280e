#!/usr/bin/env python3
"""Writes the sample payloads the tests read (tests/data/samples/*), in the formats Google documents:
Cloud Logging's LogEntry, Pub/Sub push bodies (wrapped and unwrapped), Eventarc CloudEvents in binary mode,
and Dataflow's v1b3 Job, launch and error bodies (google.rpc.Status with details). The data is our own: a
run of workflows/example.lua (run id r7f3k2) in project my-project, region europe-west4.

The files are committed; run this only to change them: python3 tests/data/samples/make_samples.py [OUT-DIR]
(tests/blackbox/test_self_contained.sh checks that it writes exactly the committed files).
"""
import base64, json, os, sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
PROJECT, REGION = "my-project", "europe-west4"
JOB_ID = "2026-11-30_02_00_13-8812734509127735501"
JOB_NAME = "my-job-1--r7f3k2-1"
T_LOG = "2026-11-30T02:14:27.318204551Z"      # when the job-message line was written
T_RECV = "2026-11-30T02:14:28.004113072Z"
T_STATE = "2026-11-30T02:14:26.751Z"          # the job's currentStateTime
T_PUBLISH = "2026-11-30T02:14:29.117Z"
MSG_ID = "13309271754608121"
LABELS = {"sluice-workflow": "example", "sluice-run": "r7f3k2", "sluice-step": "step1"}


def write(name, text):
    with open(os.path.join(OUT, name), "w") as f:
        f.write(text)


def dump(obj):
    return json.dumps(obj, indent=2) + "\n"


def logentry(text, severity, insert_id):
    return {
        "textPayload": text,
        "insertId": insert_id,
        "resource": {"type": "dataflow_step",
                     "labels": {"job_id": JOB_ID, "step_id": "", "job_name": JOB_NAME,
                                "project_id": PROJECT, "region": REGION}},
        "timestamp": T_LOG,
        "severity": severity,
        "labels": {"dataflow.googleapis.com/job_id": JOB_ID, "dataflow.googleapis.com/region": REGION,
                   "dataflow.googleapis.com/job_name": JOB_NAME},
        "logName": f"projects/{PROJECT}/logs/dataflow.googleapis.com%2Fjob-message",
        "receiveTimestamp": T_RECV,
    }


stopped = logentry("Worker pool stopped.", "INFO", "1b7qzsf4c2k")
failed = logentry("Workflow failed. Causes: S04:ReadOrders+ParseOrders failed., "
                  "The job failed because a work item has failed 4 times.", "ERROR", "1b7qzsf4c3m")
write("logentry-worker-pool-stopped.json", dump(stopped))
write("logentry-workflow-failed.json", dump(failed))

# A log sink publishes the LogEntry as the message data, with the entry's timestamp as an attribute; a push
# subscription wraps it (both spellings of the id and time fields are sent).
data = base64.b64encode(json.dumps(stopped, separators=(",", ":")).encode()).decode()
message = {"attributes": {"logging.googleapis.com/timestamp": T_LOG}, "data": data,
           "messageId": MSG_ID, "message_id": MSG_ID, "publishTime": T_PUBLISH, "publish_time": T_PUBLISH}
sub = f"projects/{PROJECT}/subscriptions/sluice-dataflow-events-push"
write("pubsub-push-wrapped-logentry.json", dump({"message": message, "subscription": sub}))
write("pubsub-push-wrapped-logentry-redelivery.json",
      dump({"message": message, "subscription": sub, "deliveryAttempt": 3}))

# An unwrapped push (payload unwrapping with metadata): the data is the body, the metadata are headers.
write("pubsub-push-unwrapped-with-metadata.http",
      "POST /pubsub/push HTTP/1.1\n"
      "Host: sluice-7h2k-ew.a.run.app\n"
      "Content-Type: application/json\n"
      "Authorization: Bearer <an OIDC ID token>\n"
      f"x-goog-pubsub-subscription-name: {sub}\n"
      f"x-goog-pubsub-message-id: {MSG_ID}\n"
      f"x-goog-pubsub-publish-time: {T_PUBLISH}\n"
      f"logging.googleapis.com/timestamp: {T_LOG}\n"
      "\n" + json.dumps(stopped) + "\n")

job = {"id": JOB_ID, "projectId": PROJECT, "name": JOB_NAME, "type": "JOB_TYPE_BATCH",
       "currentState": "JOB_STATE_DONE", "currentStateTime": T_STATE,
       "createTime": "2026-11-30T02:00:13.482Z", "startTime": "2026-11-30T02:00:13.482Z",
       "location": REGION, "labels": LABELS}
write("dataflow-job-get-done.json", dump(job))
write("dataflow-job-get-failed.json", dump(dict(job, currentState="JOB_STATE_FAILED")))

# Eventarc's direct Dataflow event: binary mode, the attributes in ce- headers, JobEventData as the body.
write("eventarc-dataflow-status-changed.http",
      "POST / HTTP/1.1\n"
      "Content-Type: application/json; charset=utf-8\n"
      "ce-id: 5c0b8e7a19d24f6e8a3b27c4d1e09f52\n"
      f"ce-source: //dataflow.googleapis.com/projects/{PROJECT}/locations/{REGION}\n"
      "ce-specversion: 1.0\n"
      "ce-type: google.cloud.dataflow.job.v1beta3.statusChanged\n"
      f"ce-subject: jobs/{JOB_NAME}\n"
      f"ce-time: {T_STATE}\n"
      "ce-dataschema: https://googleapis.github.io/google-cloudevents/proto/google/events/cloud/dataflow/v1beta3/data.proto#JobEventData\n"
      "ce-project: 480213375529\n"
      f"ce-location: {REGION}\n"
      f"ce-job: {JOB_NAME}\n"
      "Authorization: Bearer <an OIDC ID token>\n"
      "\n" + json.dumps({"@type": "type.googleapis.com/google.events.cloud.dataflow.v1beta3.JobEventData",
                         "payload": {k: v for k, v in job.items() if k != "labels"} | {"labels": LABELS}}) + "\n")

# Eventarc's Pub/Sub trigger: a messagePublished CloudEvent whose body is a push body.
write("eventarc-pubsub-message-published.http",
      "POST / HTTP/1.1\n"
      "Content-Type: application/json\n"
      f"ce-id: {int(MSG_ID) + 1}\n"
      f"ce-source: //pubsub.googleapis.com/projects/{PROJECT}/topics/sluice-dataflow-events\n"
      "ce-specversion: 1.0\n"
      "ce-type: google.cloud.pubsub.topic.v1.messagePublished\n"
      f"ce-time: {T_PUBLISH}\n"
      "Authorization: Bearer <an OIDC ID token>\n"
      "\n" + json.dumps({"subscription": f"projects/{PROJECT}/subscriptions/eventarc-{REGION}-sluice-sub-481",
                         "message": {"attributes": message["attributes"], "data": data,
                                     "messageId": str(int(MSG_ID) + 1), "publishTime": T_PUBLISH}}) + "\n")

# The launch requests workflows/example.lua makes for run r7f3k2 (steps 2 and 3).
write("dataflow-flex-launch-request.json", dump({
    "launchParameter": {
        "jobName": "my-job-2--r7f3k2-1",
        "containerSpecGcsPath": "gs://my-bucket/my-job-2/python_command_spec.json",
        "parameters": {"my_job_2_param_1": "value_1", "setup_file": "/dataflow/template/setup.py"},
        "environment": {"tempLocation": "gs://my-bucket/tmp", "maxWorkers": 10,
                        "serviceAccountEmail": f"dataflow-worker@{PROJECT}.iam.gserviceaccount.com",
                        "additionalUserLabels": {"sluice-workflow": "example", "sluice-run": "r7f3k2",
                                                 "sluice-step": "step2"}}},
    "validateOnly": False}))
# A classic template launch's body; "_query" records the query string it goes with (not a Dataflow field:
# the emulator test checks that it is refused as an unknown name, then sends the body without it).
write("dataflow-classic-launch-request.json", dump({
    "_query": "gcsPath=gs://my-bucket/templates/my-job-3&validateOnly=false",
    "jobName": "my-job-3--r7f3k2-1",
    "parameters": {"input": "gs://my-bucket/in/*"},
    "environment": {"tempLocation": "gs://my-bucket/tmp", "additionalUserLabels": {"sluice-run": "r7f3k2"}}}))
# A launch answer: the new Job, no currentState yet, its state time the epoch.
write("dataflow-flex-launch-response.json", dump({"job": {
    "id": "2026-11-30_02_14_33-4410982236571180463", "projectId": PROJECT, "name": "my-job-2--r7f3k2-1",
    "type": "JOB_TYPE_BATCH", "currentStateTime": "1970-01-01T00:00:00Z",
    "createTime": "2026-11-30T02:14:33.209715Z", "location": REGION,
    "startTime": "2026-11-30T02:14:33.209715Z"}}))
write("dataflow-jobs-list-empty.json", "{}\n")
write("dataflow-jobs-list-active-by-name.json", dump({"jobs": [
    {k: v for k, v in job.items() if k != "labels"} | {"currentState": "JOB_STATE_RUNNING"}]}))


def error(code, status, message, details=None, reason=None):
    body = {"code": code, "message": message}
    if reason:  # the legacy errors[] list some Dataflow errors still carry
        body["errors"] = [{"domain": "global", "reason": reason, "message": message}]
    body["status"] = status
    if details:
        body["details"] = details
    return dump({"error": body})


write("dataflow-error-400-invalid-template-parameters.json", error(
    400, "INVALID_ARGUMENT", "Invalid template parameters: input: Required parameter is missing.",
    [{"@type": "type.googleapis.com/google.dataflow.v1beta3.InvalidTemplateParameters",
      "parameterViolations": [{"parameter": "input", "description": "Required parameter is missing."}]}]))
write("dataflow-error-404-job-not-found-yet.json", error(
    404, "NOT_FOUND", f"(5d1e3a0c9b7f2e64): Information about job {JOB_ID} could not be found in our system. "
    "Please double check that the API being used is projects.locations.jobs.get "
    "(https://cloud.google.com/dataflow/docs/reference/rest/v1b3/projects.locations.jobs/get). If the API "
    "being used is projects.locations.jobs.get, please double check the id is correct. If it is please "
    "contact customer support."))
write("dataflow-error-409-already-exists.json", error(
    409, "ALREADY_EXISTS", f"(e82f4b7c0a19d3e5): The workflow could not be created. Causes: "
    f"(e82f4b7c0a19d570): There is already an active job named my-job-2--r7f3k2-1. If you want to submit a "
    "second job, try again by setting a different name.", reason="alreadyExists"))
write("dataflow-error-429-rate-limited.json", error(
    429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Job management requests' and limit "
    "'Job management requests per minute per user' of service 'dataflow.googleapis.com'.",
    [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]))
