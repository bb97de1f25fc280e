output "internal_url" {
  description = "sluice serve on the VM's internal address."
  value       = "http://${google_compute_instance.sluice.network_interface[0].network_ip}:${var.port}"
}

output "external_ip" {
  description = "The VM's external address (put an HTTPS proxy in front before using it)."
  value       = google_compute_instance.sluice.network_interface[0].access_config[0].nat_ip
}

output "pull_subscription" {
  description = "The subscription the VM pulls its events from (serve --subscription)."
  value       = module.core.pull_subscription
}

output "service_account_email" {
  description = "Sluice's own identity."
  value       = module.core.service_account_email
}

output "pusher_email" {
  description = "The push identity."
  value       = module.core.pusher_email
}

output "api_caller_email" {
  description = "The scheduler's API identity."
  value       = module.core.api_caller_email
}
