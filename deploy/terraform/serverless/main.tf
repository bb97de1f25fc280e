# Sluice scaled to zero (docs/deploying.md, docs/cost.md): Cloud Run with no minimum instance and CPU only during
# requests, its state in Firestore (Native mode). Nothing runs, and nothing is billed, while no request arrives:
# events reach the engine as Pub/Sub pushes that are answered once the engine has acted on them
# (--process-in-request), and the time-driven work (retry backoffs, polls, timeouts, cancels, notifications) is
# done by the reconcile job that Cloud Scheduler posts every minute. No Cloud SQL, no VM. Uses ../modules/core for
# the identities, the log sink -> Pub/Sub -> push wiring and the scheduler jobs. terraform init && terraform apply.

terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.30"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

data "google_project" "this" {
  project_id = var.project
}

locals {
  url            = "https://${var.name}-${data.google_project.this.number}.${var.region}.run.app"
  audience       = local.url
  store          = "firestore://${var.project}${google_firestore_database.store.name == "(default)" ? "" : "/${google_firestore_database.store.name}"}"
  workflows      = var.workflows_dir == null ? {} : { for f in fileset(var.workflows_dir, "*.lua") : f => file("${var.workflows_dir}/${f}") }
  with_workflows = length(local.workflows) > 0
  api_emails     = concat([module.core.api_caller_email], var.api_allow_emails)
  # A held answer must end before the push subscription's ack deadline (30 s in the core) and Cloud Run's request
  # timeout, or Pub/Sub would redeliver an event that was acted on.
  args = concat(
    ["serve", "--workflows", "/etc/sluice/workflows", "--store", local.store, "--project", var.project],
    ["--audience", local.audience, "--allow-email", module.core.pusher_email],
    flatten([for e in local.api_emails : ["--api-allow-email", e]]),
    ["--process-in-request", "25s"],
  )
}

module "core" {
  source = "../modules/core"

  project                      = var.project
  region                       = var.region
  name                         = var.name
  endpoint_url                 = local.url
  audience                     = local.audience
  sink_filter                  = var.sink_filter
  worker_service_account_email = var.worker_service_account_email
  extra_sluice_roles           = ["roles/datastore.user"]
  eventarc_cloud_run_service   = var.enable_eventarc ? google_cloud_run_v2_service.sluice.name : null
  reconcile_schedule           = var.reconcile_schedule
  schedule_tick                = var.schedule_tick
}

# ---- the store: a Firestore database in Native mode (billed per document read, write and delete; no instance) ----

# Only the (default) database gets Firestore's free quota (docs/cost.md); a project that already has one
# imports it (terraform import) or names another with firestore_database.
resource "google_firestore_database" "store" {
  project         = var.project
  name            = var.firestore_database
  location_id     = var.firestore_location
  type            = "FIRESTORE_NATIVE"
  deletion_policy = var.deletion_protection ? "ABANDON" : "DELETE"
}

# ---- workflows other than the image's: a bucket mounted over /etc/sluice/workflows ----

resource "google_storage_bucket" "workflows" {
  count                       = local.with_workflows ? 1 : 0
  project                     = var.project
  name                        = "${var.project}-${var.name}-workflows"
  location                    = var.region
  uniform_bucket_level_access = true
}

resource "google_storage_bucket_object" "workflow" {
  for_each = local.with_workflows ? local.workflows : {}
  bucket   = google_storage_bucket.workflows[0].name
  name     = each.key
  content  = each.value
}

resource "google_storage_bucket_iam_member" "sluice_reads_workflows" {
  count  = local.with_workflows ? 1 : 0
  bucket = google_storage_bucket.workflows[0].name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${module.core.service_account_email}"
}

# ---- the service: no minimum instance, CPU only while a request is in flight ----

resource "google_cloud_run_v2_service" "sluice" {
  project             = var.project
  name                = var.name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection
  custom_audiences    = [local.audience]

  template {
    service_account                  = module.core.service_account_email
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    timeout                          = "60s"
    max_instance_request_concurrency = 80

    scaling {
      min_instance_count = 0
      max_instance_count = var.max_instances
    }

    dynamic "volumes" {
      for_each = local.with_workflows ? [1] : []
      content {
        name = "workflows"

        gcs {
          bucket    = google_storage_bucket.workflows[0].name
          read_only = true
        }
      }
    }

    containers {
      image = var.image
      args  = local.args

      ports {
        container_port = 8080
      }

      resources {
        cpu_idle          = true
        startup_cpu_boost = true
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
      }

      # A change of the workflows rolls out a new revision, which loads them (a bucket mount sends no inotify).
      env {
        name  = "SLUICE_WORKFLOWS_SHA256"
        value = sha256(jsonencode(local.workflows))
      }

      dynamic "volume_mounts" {
        for_each = local.with_workflows ? [1] : []
        content {
          name       = "workflows"
          mount_path = "/etc/sluice/workflows"
        }
      }

      startup_probe {
        period_seconds    = 1
        failure_threshold = 30

        http_get {
          path = "/readyz"
        }
      }
    }
  }
}

# Cloud Run checks the caller's token (run.invoker) before Sluice checks it again.
resource "google_cloud_run_v2_service_iam_member" "pusher" {
  project  = var.project
  location = var.region
  name     = google_cloud_run_v2_service.sluice.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${module.core.pusher_email}"
}

resource "google_cloud_run_v2_service_iam_member" "api_caller" {
  project  = var.project
  location = var.region
  name     = google_cloud_run_v2_service.sluice.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${module.core.api_caller_email}"
}

resource "google_cloud_run_v2_service_iam_member" "operator" {
  for_each = toset(var.api_allow_emails)
  project  = var.project
  location = var.region
  name     = google_cloud_run_v2_service.sluice.name
  role     = "roles/run.invoker"
  member   = endswith(each.value, ".gserviceaccount.com") ? "serviceAccount:${each.value}" : "user:${each.value}"
}
