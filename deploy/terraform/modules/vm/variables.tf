variable "project" {
  description = "The project to deploy to."
  type        = string
}

variable "region" {
  description = "Region of the scheduler jobs."
  type        = string
}

variable "zone" {
  description = "Zone of the VM and its data disk."
  type        = string
}

variable "name" {
  description = "Name of the VM and prefix of every resource."
  type        = string
  default     = "sluice"
}

variable "image" {
  description = "Sluice's container image; the startup script copies the binary and workflows out of it."
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

variable "machine_type" {
  description = "The VM's machine type."
  type        = string
  default     = "e2-micro"
}

variable "data_disk_gb" {
  description = "Size of the persistent disk that holds the SQLite store."
  type        = number
  default     = 10
}

variable "public_url" {
  description = "An HTTPS URL in front of the VM, for Cloud Scheduler's runs only (events come by pull); null: none."
  type        = string
  default     = null
}

variable "ingress_source_ranges" {
  description = "Source ranges allowed to reach the VM's port (e.g. your HTTPS proxy's); empty: no firewall rule."
  type        = list(string)
  default     = []
}

variable "port" {
  description = "The port sluice serve listens on."
  type        = number
  default     = 8080
}

variable "api_allow_emails" {
  description = "People or automation allowed on the API besides the scheduler (serve --api-allow-email)."
  type        = list(string)
  default     = []
}

variable "schedule_tick" {
  description = "Cron of the Cloud Scheduler job that ticks the workflows' schedules through public_url; null: none."
  type        = string
  default     = "* * * * *"
}
