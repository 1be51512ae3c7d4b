output "registry_host" {
  description = "The registry's host, as image references name it: the custom domain, else the function's run.app host."
  value       = local.registry_host
}

output "docker_pull_example" {
  description = "A pull that works once the registry is up (a team registry needs `docker login` first, docs/deploy.md)."
  value       = "docker pull ${local.registry_host}/shell/git"
}

output "registry_url" {
  description = "The registry function's own https URL (run.app)."
  value       = local.function_uri
}

output "custom_domain_dns_records" {
  description = "DNS records to create for custom_domain (empty without one)."
  value       = var.custom_domain != "" ? google_cloud_run_domain_mapping.registry[0].status[0].resource_records : []
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
  description = "Push the builder image here (builder-image/cloudbuild.yaml), then set builder_image to <this>/builder:<tag>."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}
