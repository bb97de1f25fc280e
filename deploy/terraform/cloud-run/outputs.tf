output "url" {
  description = "SLUICE_SERVER for sluice start/status/cancel."
  value       = module.sluice.url
}

output "service_uri" {
  description = "The URL Cloud Run reports."
  value       = module.sluice.service_uri
}

output "push_endpoint" {
  description = "Where Pub/Sub pushes."
  value       = module.sluice.push_endpoint
}

output "dead_letter_subscription" {
  description = "Where poison messages wait."
  value       = module.sluice.dead_letter_subscription
}
