variable "project" {
  description = "The project to deploy to."
  type        = string
}

variable "region" {
  description = "The region (Cloud Run, Cloud SQL, Cloud Scheduler)."
  type        = string
  default     = "europe-west1"
}

variable "name" {
  description = "Name of the service and prefix of every resource."
  type        = string
  default     = "sluice"
}

variable "image" {
  description = "Sluice's container image in Artifact Registry (make image, then podman push)."
  type        = string
}

variable "workflows_dir" {
  description = "A directory of workflow files to deploy; null: the ones baked into the image."
  type        = string
  default     = null
}

variable "sink_filter" {
  description = "The log sink filter (sluice sink-filter --format terraform WORKFLOWS_DIR/ prints this line for terraform.tfvars); null: the shipped workflows'."
  type        = string
  default     = null
}

variable "worker_service_account_email" {
  description = "The Dataflow worker service account."
  type        = string
}

variable "api_allow_emails" {
  description = "Operators allowed on the API (their Google identities)."
  type        = list(string)
  default     = []
}

variable "enable_eventarc" {
  description = "Also receive Dataflow statusChanged events through Eventarc."
  type        = bool
  default     = false
}

variable "schedule_tick" {
  description = "Cron of the Cloud Scheduler job that ticks the workflows' schedules (POST /v1/schedules:tick); null: none."
  type        = string
  default     = "* * * * *"
}
