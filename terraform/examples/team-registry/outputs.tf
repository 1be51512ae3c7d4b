output "registry_host" {
  description = "Where to pull from."
  value       = module.registry.registry_host
}

output "docker_pull_example" {
  description = "A ready pull command."
  value       = module.registry.docker_pull_example
}

output "blob_bucket" {
  description = "The blob bucket."
  value       = module.registry.blob_bucket
}

output "builder_url" {
  description = "The private builder's URL."
  value       = module.registry.builder_url
}

output "builder_image_repository" {
  description = "Where builder-image/cloudbuild.yaml pushes the builder image."
  value       = module.registry.builder_image_repository
}

output "custom_domain_dns_records" {
  description = "DNS records to create for custom_domain."
  value       = module.registry.custom_domain_dns_records
}
