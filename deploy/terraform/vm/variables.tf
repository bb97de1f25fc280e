variable "project" {
  description = "The project to deploy to."
  type        = string
}

variable "region" {
  description = "The region (Cloud Scheduler)."
  type        = string
  default     = "europe-west1"
}

variable "zone" {
  description = "The VM's zone."
  type        = string
  default     = "europe-west1-b"
}

variable "name" {
  description = "Name of the VM and prefix of every resource."
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

variable "public_url" {
  description = "An HTTPS URL that reaches the VM's port (for scheduler runs; events come by pull); null: none."
  type        = string
  default     = null
}

variable "ingress_source_ranges" {
  description = "Who may reach the VM's port (your HTTPS proxy); empty: nobody from outside."
  type        = list(string)
  default     = []
}

variable "api_allow_emails" {
  description = "Operators allowed on the API (their Google identities)."
  type        = list(string)
  default     = []
}

variable "schedule_tick" {
  description = "Cron of the Cloud Scheduler job that ticks the workflows' schedules (needs public_url); null: none."
  type        = string
  default     = "* * * * *"
}
