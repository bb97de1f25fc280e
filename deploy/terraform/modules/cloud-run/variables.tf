variable "project" {
  description = "The project to deploy to."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run service, the Cloud SQL instance and the scheduler jobs."
  type        = string
}

variable "name" {
  description = "Name of the service and prefix of every resource (several deployments can share a project)."
  type        = string
  default     = "sluice"
}

variable "image" {
  description = "Sluice's container image (the top-level Dockerfile), e.g. REGION-docker.pkg.dev/P/REPO/sluice:TAG."
  type        = string
}

variable "workflows" {
  description = "Workflow files, file name => Lua source; empty: the ones baked into the image."
  type        = map(string)
  default     = {}
}

variable "sink_filter" {
  description = "The log sink filter (sluice sink-filter --format terraform DIR/); null: the shipped workflows'."
  type        = string
  default     = null
}

variable "worker_service_account_email" {
  description = "The Dataflow worker service account the workflows' jobs run as."
  type        = string
}

variable "api_allow_emails" {
  description = "People or automation allowed on the API besides the scheduler (serve --api-allow-email)."
  type        = list(string)
  default     = []
}

variable "cpu_always_allocated" {
  description = "CPU outside requests: the engine ticks on its own. false: --process-in-request and reconcile ticks."
  type        = bool
  default     = true
}

variable "max_instances" {
  description = "Most instances: replicas share the PostgreSQL store and split the engine's work row by row."
  type        = number
  default     = 3
}

variable "enable_eventarc" {
  description = "Also deliver Dataflow statusChanged events through Eventarc (the alternative channel)."
  type        = bool
  default     = false
}

variable "database_tier" {
  description = "Cloud SQL machine tier."
  type        = string
  default     = "db-f1-micro"
}

variable "database_version" {
  description = "Cloud SQL PostgreSQL version."
  type        = string
  default     = "POSTGRES_16"
}

variable "deletion_protection" {
  description = "Protect the service and the database from terraform destroy."
  type        = bool
  default     = true
}

variable "reconcile_schedule" {
  description = "Cron schedule of POST /v1/reconcile; null: none."
  type        = string
  default     = "*/5 * * * *"
}

variable "schedule_tick" {
  description = "Cron of the Cloud Scheduler job that ticks the workflows' schedules (POST /v1/schedules:tick); null: none."
  type        = string
  default     = "* * * * *"
}
