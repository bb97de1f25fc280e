# The shared core of both deployments: Sluice's three identities and their roles, the log sink → Pub/Sub →
# push or pull path (with its dead-letter topic), the Eventarc Dataflow trigger, and the Cloud Scheduler jobs.
# The shape modules (../cloud-run, ../vm) add where Sluice runs and its store.

data "google_project" "this" {
  project_id = var.project
}

locals {
  push         = var.endpoint_url != null && !var.pull
  events       = local.push || var.pull
  scheduled    = var.endpoint_url != null
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  sluice       = "serviceAccount:${google_service_account.sluice.email}"
}

# ---- identities: Sluice itself, the pusher (Pub/Sub push, Eventarc), the API caller (Cloud Scheduler) ----

resource "google_service_account" "sluice" {
  project      = var.project
  account_id   = var.name
  display_name = "Sluice: launches, checks and cancels Dataflow jobs"
}

resource "google_service_account" "pusher" {
  project      = var.project
  account_id   = "${var.name}-push"
  display_name = "Sluice ingress: the identity of Pub/Sub push and Eventarc deliveries"
}

resource "google_service_account" "api_caller" {
  project      = var.project
  account_id   = "${var.name}-api"
  display_name = "Sluice API: the identity Cloud Scheduler starts runs and reconciles with"
}

resource "google_project_iam_member" "sluice_dataflow" {
  project = var.project
  role    = "roles/dataflow.developer"
  member  = local.sluice
}

resource "google_project_iam_member" "sluice_extra" {
  for_each = toset(var.extra_sluice_roles)
  project  = var.project
  role     = each.value
  member   = local.sluice
}

# Launching a job that runs as the worker service account needs actAs on it, and on nothing else.
resource "google_service_account_iam_member" "sluice_acts_as_worker" {
  service_account_id = "projects/${var.project}/serviceAccounts/${var.worker_service_account_email}"
  role               = "roles/iam.serviceAccountUser"
  member             = local.sluice
}

# ---- log sink → Pub/Sub → push ----

resource "google_pubsub_topic" "events" {
  count   = local.events ? 1 : 0
  project = var.project
  name    = "${var.name}-dataflow-events"
}

resource "google_pubsub_topic" "dead_letter" {
  count   = local.events ? 1 : 0
  project = var.project
  name    = "${var.name}-dataflow-events-dead-letter"
}

# A topic without subscriptions drops what it receives: this one keeps dead letters for a human to read.
resource "google_pubsub_subscription" "dead_letter" {
  count                      = local.events ? 1 : 0
  project                    = var.project
  name                       = "${var.name}-dead-letter-inspect"
  topic                      = google_pubsub_topic.dead_letter[0].id
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

resource "google_logging_project_sink" "dataflow_end" {
  count                  = local.events ? 1 : 0
  project                = var.project
  name                   = "${var.name}-dataflow-job-end"
  destination            = "pubsub.googleapis.com/${google_pubsub_topic.events[0].id}"
  filter                 = var.sink_filter
  unique_writer_identity = true
}

# The trap of the Cloud Function approach: the sink writes as its own identity, which must be allowed to publish.
resource "google_pubsub_topic_iam_member" "sink_writer" {
  count   = local.events ? 1 : 0
  project = var.project
  topic   = google_pubsub_topic.events[0].name
  role    = "roles/pubsub.publisher"
  member  = google_logging_project_sink.dataflow_end[0].writer_identity
}

resource "google_pubsub_subscription" "push" {
  count                = local.push ? 1 : 0
  project              = var.project
  name                 = "${var.name}-dataflow-events-push"
  topic                = google_pubsub_topic.events[0].id
  ack_deadline_seconds = 30

  push_config {
    push_endpoint = "${var.endpoint_url}/v1/events/pubsub"

    oidc_token {
      service_account_email = google_service_account.pusher.email
      audience              = var.audience
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[0].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.dead_letter_publisher]
}

# Pull instead of push (the VM shape): Sluice asks for the messages (serve --subscription), so it needs no
# public endpoint; it acknowledges a message once its event is recorded, and extends the deadline while it works.
resource "google_pubsub_subscription" "pull" {
  count                = var.pull ? 1 : 0
  project              = var.project
  name                 = "${var.name}-dataflow-events-pull"
  topic                = google_pubsub_topic.events[0].id
  ack_deadline_seconds = 30

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[0].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.dead_letter_publisher]
}

# Pulling, acknowledging and extending deadlines on this subscription, and nothing else.
resource "google_pubsub_subscription_iam_member" "sluice_subscriber" {
  count        = var.pull ? 1 : 0
  project      = var.project
  subscription = google_pubsub_subscription.pull[0].name
  role         = "roles/pubsub.subscriber"
  member       = local.sluice
}

# Pub/Sub's service agent signs the push tokens as the pusher, and moves poison messages to the dead-letter
# topic: publisher there, subscriber on the subscription it takes them from.
resource "google_service_account_iam_member" "pubsub_agent_token_creator" {
  service_account_id = google_service_account.pusher.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  count   = local.events ? 1 : 0
  project = var.project
  topic   = google_pubsub_topic.dead_letter[0].name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  count        = local.events ? 1 : 0
  project      = var.project
  subscription = local.push ? google_pubsub_subscription.push[0].name : google_pubsub_subscription.pull[0].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# ---- Eventarc: Dataflow's statusChanged events, the alternative channel (no sink, no filter) ----

resource "google_project_iam_member" "pusher_event_receiver" {
  count   = var.eventarc_cloud_run_service != null ? 1 : 0
  project = var.project
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.pusher.email}"
}

resource "google_eventarc_trigger" "dataflow" {
  count           = var.eventarc_cloud_run_service != null ? 1 : 0
  project         = var.project
  name            = "${var.name}-dataflow-status"
  location        = var.region
  service_account = google_service_account.pusher.email

  matching_criteria {
    attribute = "type"
    value     = "google.cloud.dataflow.job.v1beta3.statusChanged"
  }

  destination {
    cloud_run_service {
      service = var.eventarc_cloud_run_service
      region  = var.region
      path    = "/v1/events/eventarc"
    }
  }

  depends_on = [google_project_iam_member.pusher_event_receiver]
}

# ---- Cloud Scheduler: reconcile ticks and the schedules' clock, with OIDC tokens of the API caller ----

resource "google_cloud_scheduler_job" "reconcile" {
  count            = local.scheduled && var.reconcile_schedule != null ? 1 : 0
  project          = var.project
  region           = var.region
  name             = "${var.name}-reconcile"
  schedule         = var.reconcile_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "30s"

  http_target {
    http_method = "POST"
    uri         = "${var.endpoint_url}/v1/reconcile?budget_ms=5000"
    # Every state-changing API route takes JSON only, also without a body (docs/api.md).
    headers = {
      "Content-Type" = "application/json"
    }

    oidc_token {
      service_account_email = google_service_account.api_caller.email
      audience              = var.audience
    }
  }
}

# The workflows' schedules live in the workflows (schedule = {...}); this job is their clock. Retries are safe: the
# X-CloudScheduler-ScheduleTime header stays the same across them, and each schedule time starts one run at most.
resource "google_cloud_scheduler_job" "schedules_tick" {
  count            = local.scheduled && var.schedule_tick != null ? 1 : 0
  project          = var.project
  region           = var.region
  name             = "${var.name}-schedules-tick"
  schedule         = var.schedule_tick
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  http_target {
    http_method = "POST"
    uri         = "${var.endpoint_url}/v1/schedules:tick"
    headers = {
      "Content-Type" = "application/json"
    }

    oidc_token {
      service_account_email = google_service_account.api_caller.email
      audience              = var.audience
    }
  }
}
