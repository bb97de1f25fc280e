output "url" {
  description = "The service's deterministic URL (also the OIDC audience)."
  value       = local.url
}

output "service_uri" {
  description = "The URL Cloud Run reports for the service."
  value       = google_cloud_run_v2_service.sluice.uri
}

output "push_endpoint" {
  description = "Where the Pub/Sub subscription pushes."
  value       = module.core.push_endpoint
}

output "database_connection_name" {
  description = "The Cloud SQL instance (PROJECT:REGION:INSTANCE)."
  value       = google_sql_database_instance.store.connection_name
}

output "service_account_email" {
  description = "Sluice's own identity."
  value       = module.core.service_account_email
}

output "pusher_email" {
  description = "The push and Eventarc identity."
  value       = module.core.pusher_email
}

output "api_caller_email" {
  description = "The scheduler's API identity."
  value       = module.core.api_caller_email
}

output "dead_letter_subscription" {
  description = "Where poison messages wait."
  value       = module.core.dead_letter_subscription
}
