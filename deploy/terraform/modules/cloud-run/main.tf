# Sluice on Cloud Run with its store in Cloud SQL for PostgreSQL (Cloud Run has no persistent disk, so SQLite is
# not an option there). The shared core (../core) adds the identities, the sink → Pub/Sub → push path, Eventarc
# and the scheduler jobs. The audience is the service's deterministic URL, which is known before the service
# exists: that keeps the service's own arguments free of a reference to itself.

data "google_project" "this" {
  project_id = var.project
}

locals {
  url            = "https://${var.name}-${data.google_project.this.number}.${var.region}.run.app"
  audience       = local.url
  store          = "host=/cloudsql/${google_sql_database_instance.store.connection_name} dbname=${google_sql_database.sluice.name} user=${google_sql_user.sluice.name}"
  with_workflows = length(var.workflows) > 0
  api_emails     = concat([module.core.api_caller_email], var.api_allow_emails)
  args = concat(
    ["serve", "--workflows", "/etc/sluice/workflows", "--store", local.store, "--project", var.project],
    ["--audience", local.audience, "--allow-email", module.core.pusher_email],
    flatten([for e in local.api_emails : ["--api-allow-email", e]]),
    var.cpu_always_allocated ? [] : ["--process-in-request", "5s"],
  )
}

module "core" {
  source = "../core"

  project                      = var.project
  region                       = var.region
  name                         = var.name
  endpoint_url                 = local.url
  audience                     = local.audience
  sink_filter                  = var.sink_filter
  worker_service_account_email = var.worker_service_account_email
  extra_sluice_roles           = ["roles/cloudsql.client"]
  eventarc_cloud_run_service   = var.enable_eventarc ? google_cloud_run_v2_service.sluice.name : null
  reconcile_schedule           = var.reconcile_schedule
  schedule_tick                = var.schedule_tick
}

# ---- the store: Cloud SQL for PostgreSQL, reached over the Cloud SQL unix socket ----

resource "google_sql_database_instance" "store" {
  project             = var.project
  name                = "${var.name}-store"
  region              = var.region
  database_version    = var.database_version
  deletion_protection = var.deletion_protection

  settings {
    tier              = var.database_tier
    availability_type = "ZONAL"
    disk_autoresize   = true

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
    }

    ip_configuration {
      ipv4_enabled = true
    }
  }
}

resource "google_sql_database" "sluice" {
  project  = var.project
  instance = google_sql_database_instance.store.name
  name     = "sluice"
}

resource "random_password" "database" {
  length  = 32
  special = false
}

resource "google_sql_user" "sluice" {
  project  = var.project
  instance = google_sql_database_instance.store.name
  name     = "sluice"
  password = random_password.database.result
}

resource "google_secret_manager_secret" "database_password" {
  project   = var.project
  secret_id = "${var.name}-database-password"

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "database_password" {
  secret      = google_secret_manager_secret.database_password.id
  secret_data = random_password.database.result
}

resource "google_secret_manager_secret_iam_member" "sluice_reads_password" {
  project   = var.project
  secret_id = google_secret_manager_secret.database_password.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${module.core.service_account_email}"
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
  for_each = local.with_workflows ? var.workflows : {}
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

# ---- the service ----

resource "google_cloud_run_v2_service" "sluice" {
  project             = var.project
  name                = var.name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection
  # Cloud Run's own token check accepts this audience too (it is the deterministic URL, one of the service's).
  custom_audiences = [local.audience]

  template {
    service_account                  = module.core.service_account_email
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    timeout                          = "60s"
    max_instance_request_concurrency = 80

    scaling {
      min_instance_count = 1
      max_instance_count = var.max_instances
    }

    volumes {
      name = "cloudsql"

      cloud_sql_instance {
        instances = [google_sql_database_instance.store.connection_name]
      }
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
        cpu_idle          = !var.cpu_always_allocated
        startup_cpu_boost = true
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
      }

      env {
        name = "PGPASSWORD"

        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.database_password.secret_id
            version = "latest"
          }
        }
      }

      # A change of the workflows rolls out a new revision, which loads them (a bucket mount sends no inotify).
      env {
        name  = "SLUICE_WORKFLOWS_SHA256"
        value = sha256(jsonencode(var.workflows))
      }

      volume_mounts {
        name       = "cloudsql"
        mount_path = "/cloudsql"
      }

      dynamic "volume_mounts" {
        for_each = local.with_workflows ? [1] : []
        content {
          name       = "workflows"
          mount_path = "/etc/sluice/workflows"
        }
      }

      startup_probe {
        period_seconds    = 2
        failure_threshold = 30

        http_get {
          path = "/readyz"
        }
      }

      liveness_probe {
        period_seconds = 30

        http_get {
          path = "/healthz"
        }
      }
    }
  }

  depends_on = [
    google_secret_manager_secret_iam_member.sluice_reads_password,
    google_secret_manager_secret_version.database_password,
  ]
}

# Cloud Run checks the caller's token (run.invoker) before Sluice checks it again: the pusher, the scheduler's
# identity and the people on api_allow_emails may invoke; nobody else (no allUsers).
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
