output "url" {
  description = "SLUICE_SERVER for sluice start/status/cancel."
  value       = local.url
}

output "service_uri" {
  description = "The URL Cloud Run reports."
  value       = google_cloud_run_v2_service.sluice.uri
}

output "push_endpoint" {
  description = "Where Pub/Sub pushes."
  value       = module.core.push_endpoint
}

output "store" {
  description = "The store URL serve is given (firestore://PROJECT/DATABASE)."
  value       = local.store
}

output "service_account_email" {
  description = "Sluice's own identity."
  value       = module.core.service_account_email
}

output "dead_letter_subscription" {
  description = "Where poison messages wait."
  value       = module.core.dead_letter_subscription
}
