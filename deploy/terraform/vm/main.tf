# Sluice on one e2-micro VM with SQLite on a persistent disk (docs/deploying.md): terraform init && terraform apply.

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

locals {
  workflows = var.workflows_dir == null ? {} : {
    for f in fileset(var.workflows_dir, "*.lua") : f => file("${var.workflows_dir}/${f}")
  }
}

module "sluice" {
  source = "../modules/vm"

  project                      = var.project
  region                       = var.region
  zone                         = var.zone
  name                         = var.name
  image                        = var.image
  workflows                    = local.workflows
  sink_filter                  = var.sink_filter
  worker_service_account_email = var.worker_service_account_email
  public_url                   = var.public_url
  ingress_source_ranges        = var.ingress_source_ranges
  api_allow_emails             = var.api_allow_emails
  schedule_tick                = var.schedule_tick
}
