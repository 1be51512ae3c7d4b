output "registry_url" {
  description = "The registry, at the root of its run.app host: docker pull <host>/shell/git."
  value       = google_cloudfunctions2_function.registry.service_config[0].uri
}

output "registry_host" {
  description = "The registry's host name, as image references use it."
  value       = trimprefix(google_cloudfunctions2_function.registry.service_config[0].uri, "https://")
}

output "builder_url" {
  description = "The private builder service (invoked only by the registry function)."
  value       = google_cloud_run_v2_service.builder.uri
}

output "blob_bucket" {
  description = "The blob bucket (GCS_BUCKET)."
  value       = google_storage_bucket.blobs.name
}

output "firestore_database" {
  description = "The Firestore database of the index (NIXERY_FIRESTORE_DATABASE)."
  value       = local.firestore_database
}

output "registry_service_account" {
  description = "Runtime identity of the registry function."
  value       = google_service_account.registry.email
}

output "builder_service_account" {
  description = "Runtime identity of the builder."
  value       = google_service_account.builder.email
}

output "function_build_service_account" {
  description = "Identity Cloud Build uses to build the registry function's container."
  value       = google_service_account.function_build.email
}

output "builder_image_repository" {
  description = "Push the builder image here (then set builder_image to <this>/builder:<tag>)."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}
