output "internal_url" {
  description = "sluice serve on the VM's internal address."
  value       = module.sluice.internal_url
}

output "external_ip" {
  description = "The VM's external address."
  value       = module.sluice.external_ip
}

output "push_endpoint" {
  description = "Where Pub/Sub pushes (null without public_url)."
  value       = module.sluice.push_endpoint
}
