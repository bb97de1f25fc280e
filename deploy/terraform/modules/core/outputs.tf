output "service_account_email" {
  description = "Sluice's own identity (Dataflow)."
  value       = google_service_account.sluice.email
}

output "pusher_email" {
  description = "The identity of Pub/Sub push and Eventarc deliveries (serve --allow-email)."
  value       = google_service_account.pusher.email
}

output "api_caller_email" {
  description = "The identity of Cloud Scheduler's API calls (serve --api-allow-email)."
  value       = google_service_account.api_caller.email
}

output "topic" {
  description = "The topic the log sink publishes to (null without push or pull)."
  value       = local.events ? google_pubsub_topic.events[0].id : null
}

output "dead_letter_subscription" {
  description = "Where poison messages wait for a human (null without push or pull)."
  value       = local.events ? google_pubsub_subscription.dead_letter[0].id : null
}

output "sink_writer_identity" {
  description = "The log sink's writer identity (granted roles/pubsub.publisher on the topic)."
  value       = local.events ? google_logging_project_sink.dataflow_end[0].writer_identity : null
}

output "pull_subscription" {
  description = "The subscription Sluice pulls, projects/P/subscriptions/S (serve --subscription; null without pull)."
  value       = var.pull ? google_pubsub_subscription.pull[0].id : null
}

output "push_endpoint" {
  description = "Where Pub/Sub pushes (null without push)."
  value       = local.push ? "${var.endpoint_url}/v1/events/pubsub" : null
}
