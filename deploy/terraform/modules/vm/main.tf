# Sluice on one small Compute Engine VM, its SQLite store on a persistent disk of its own (it outlives the VM).
# The VM's CPU is always there, so the engine polls on time without reconcile ticks; events (the core's sink →
# Pub/Sub) make it faster. They come by pull: Sluice asks the subscription (serve --subscription), so the VM
# needs no public endpoint, load balancer or certificate. public_url is only for Cloud Scheduler's cron runs.
# The startup script installs deploy/systemd/sluice.service unchanged.

locals {
  audience   = coalesce(var.public_url, "sluice-${var.name}")
  api_emails = concat([module.core.api_caller_email], var.api_allow_emails)
  serve_args = join(" ", concat(
    ["--project", var.project, "--audience", local.audience, "--allow-email", module.core.pusher_email],
    ["--subscription", module.core.pull_subscription],
    flatten([for e in local.api_emails : ["--api-allow-email", e]]),
  ))
}

module "core" {
  source = "../core"

  project                      = var.project
  region                       = var.region
  name                         = var.name
  endpoint_url                 = var.public_url
  pull                         = true
  audience                     = local.audience
  sink_filter                  = var.sink_filter
  worker_service_account_email = var.worker_service_account_email
  extra_sluice_roles           = ["roles/artifactregistry.reader", "roles/logging.logWriter"]
  reconcile_schedule           = null
  schedule_tick                = var.schedule_tick
}

resource "google_compute_disk" "data" {
  project = var.project
  name    = "${var.name}-data"
  zone    = var.zone
  type    = "pd-standard"
  size    = var.data_disk_gb
}

resource "google_compute_instance" "sluice" {
  project                   = var.project
  name                      = var.name
  zone                      = var.zone
  machine_type              = var.machine_type
  tags                      = ["sluice"]
  allow_stopping_for_update = true

  boot_disk {
    initialize_params {
      image = "debian-cloud/debian-12"
      type  = "pd-standard"
      size  = 10
    }
  }

  attached_disk {
    source      = google_compute_disk.data.id
    device_name = "sluice-data"
  }

  network_interface {
    network = "default"

    access_config {}
  }

  service_account {
    email  = module.core.service_account_email
    scopes = ["cloud-platform"]
  }

  metadata = {
    startup-script = templatefile("${path.module}/startup.sh.tftpl", {
      image      = var.image
      unit       = file("${path.module}/../../../systemd/sluice.service")
      serve_args = local.serve_args
      port       = var.port
      workflows  = { for name, text in var.workflows : name => base64encode(text) }
    })
  }
}

resource "google_compute_firewall" "sluice" {
  count         = length(var.ingress_source_ranges) > 0 ? 1 : 0
  project       = var.project
  name          = "${var.name}-allow-http"
  network       = "default"
  source_ranges = var.ingress_source_ranges
  target_tags   = ["sluice"]

  allow {
    protocol = "tcp"
    ports    = [tostring(var.port)]
  }
}
