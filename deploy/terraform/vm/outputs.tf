output "internal_url" {
  description = "sluice serve on the VM's internal address."
  value       = module.sluice.internal_url
}

output "external_ip" {
  description = "The VM's external address."
  value       = module.sluice.external_ip
}

output "pull_subscription" {
  description = "The subscription the VM pulls its events from (serve --subscription)."
  value       = module.sluice.pull_subscription
}
