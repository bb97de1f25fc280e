# Sluice on Cloud Run + Cloud SQL for PostgreSQL (docs/deploying.md): terraform init && terraform apply.

terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.30"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5"
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
  source = "../modules/cloud-run"

  project                      = var.project
  region                       = var.region
  name                         = var.name
  image                        = var.image
  workflows                    = local.workflows
  sink_filter                  = var.sink_filter
  worker_service_account_email = var.worker_service_account_email
  api_allow_emails             = var.api_allow_emails
  enable_eventarc              = var.enable_eventarc
  schedule_tick                = var.schedule_tick
}
