variable "project" {
  description = "The project Sluice, its topics and its identities live in."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Scheduler jobs and the Eventarc trigger."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name (several deployments can share a project)."
  type        = string
  default     = "sluice"
}

variable "endpoint_url" {
  description = "Sluice's public HTTPS base URL; null: no push subscription or scheduler jobs (without pull: no sink)."
  type        = string
  default     = null
}

variable "pull" {
  description = "Deliver the events by a pull subscription Sluice reads (serve --subscription) instead of push."
  type        = bool
  default     = false
}

variable "audience" {
  description = "The OIDC audience of every token sent to Sluice (serve --audience)."
  type        = string
}

variable "worker_service_account_email" {
  description = "The Dataflow worker service account the launched jobs run as (Sluice needs actAs on it)."
  type        = string
}

variable "extra_sluice_roles" {
  description = "More project roles for Sluice's own service account (e.g. roles/cloudsql.client)."
  type        = list(string)
  default     = []
}

variable "eventarc_cloud_run_service" {
  description = "The Cloud Run service an Eventarc Dataflow trigger delivers to; null: no trigger."
  type        = string
  default     = null
}

variable "max_delivery_attempts" {
  description = "Deliveries of one message before it moves to the dead-letter topic (5 to 100)."
  type        = number
  default     = 10
}

variable "reconcile_schedule" {
  description = "Cron schedule of POST /v1/reconcile (needed with CPU only during requests); null: none."
  type        = string
  default     = "*/5 * * * *"
}

variable "schedule_tick" {
  description = "Cron of the Cloud Scheduler job that ticks the workflows' schedules (POST /v1/schedules:tick): a clock for a service with CPU only during requests; null: none."
  type        = string
  default     = "* * * * *"
}
