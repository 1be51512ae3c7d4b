# A team's registry: the nixery-registry module with the settings a team decides on.
# Copy this directory (or point `source` at a pinned git ref of this repository) and fill in
# terraform.tfvars (see terraform.tfvars.example and docs/deploy.md).
module "registry" {
  source = "../../modules/nixery-registry"

  project_id  = var.project_id
  region      = var.region
  name_prefix = var.name_prefix

  access                      = var.access
  team_members                = var.team_members
  team_domains                = var.team_domains
  team_audiences              = var.team_audiences
  robot_tokens_secret_id      = var.robot_tokens_secret_id
  robot_tokens_secret_version = var.robot_tokens_secret_version
  custom_domain               = var.custom_domain

  # builder-image/cloudbuild.yaml pushes <region>-docker.pkg.dev/<project>/<name_prefix>/builder:<tag>.
  builder_image       = "${var.region}-docker.pkg.dev/${var.project_id}/${var.name_prefix}/builder:${var.builder_image_tag}"
  builder_cpu         = var.builder_cpu
  builder_memory      = var.builder_memory
  deletion_protection = var.deletion_protection

  builder_max_instances = var.builder_max_instances
  client_build_limit    = var.client_build_limit

  force_destroy_buckets = var.force_destroy_buckets
}
