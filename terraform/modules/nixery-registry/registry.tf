# The registry: a Cloud Function (2nd gen) serving the OCI distribution API at the root of
# its run.app host (or of var.custom_domain).
resource "google_cloudfunctions2_function" "registry" {
  #checkov:skip=CKV_GCP_124:A registry must be reachable by docker/podman/containerd clients on the internet; a team registry checks its callers itself (var.access), not by ingress.
  name        = "${var.name_prefix}-registry"
  project     = var.project_id
  location    = var.region
  description = "nixery-serverless registry: builds images from Nix packages named in the path"
  labels      = var.labels

  build_config {
    runtime           = var.function_runtime
    entry_point       = "registry"
    service_account   = google_service_account.function_build.id
    docker_repository = google_artifact_registry_repository.images.id

    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = google_storage_bucket_object.function_source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.registry.email
    available_cpu                    = var.function_cpu
    available_memory                 = var.function_memory
    timeout_seconds                  = var.function_timeout_seconds
    min_instance_count               = 0
    max_instance_count               = var.function_max_instances
    max_instance_request_concurrency = var.function_request_concurrency
    ingress_settings                 = "ALLOW_ALL"
    all_traffic_on_latest_revision   = true
    environment_variables            = local.function_env

    # The salted robot token hashes, read from Secret Manager when the instance starts; the
    # secret's value never passes through Terraform or its state.
    dynamic "secret_environment_variables" {
      for_each = var.robot_tokens_secret_id != "" ? [var.robot_tokens_secret_id] : []
      content {
        key        = "NIXERY_ROBOT_TOKENS"
        project_id = var.project_id
        secret     = secret_environment_variables.value
        version    = var.robot_tokens_secret_version
      }
    }
  }

  lifecycle {
    precondition {
      # A build answer that arrives after the function's own timeout is lost (docs/cloud.md).
      condition     = var.build_wait_seconds < var.function_timeout_seconds
      error_message = "build_wait_seconds must be below function_timeout_seconds."
    }
    precondition {
      # The builder has CPU only while it serves a request: a build should end inside it.
      condition     = var.build_wait_seconds > var.nix_timeout_seconds
      error_message = "build_wait_seconds must be above nix_timeout_seconds."
    }
    precondition {
      # A team registry nobody belongs to would refuse every pull.
      condition     = var.access == "public" || length(var.team_members) + length(var.team_domains) > 0 || var.robot_tokens_secret_id != ""
      error_message = "access = \"team\" needs team_members, team_domains or robot_tokens_secret_id."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_project_service.secret_manager,
    google_project_iam_member.function_build_writes_logs,
    google_project_iam_member.function_build_reads_sources,
    google_artifact_registry_repository_iam_member.function_build_pushes_image,
    google_storage_bucket_iam_member.registry_reads_blobs,
    google_project_iam_member.registry_uses_firestore,
    google_service_account_iam_member.registry_signs_as_itself,
    google_secret_manager_secret_iam_member.registry_reads_robot_tokens,
    google_cloud_run_service_iam_member.function_invokes_builder,
  ]
}

# Who may call the function at the IAM level: everyone, for both access modes. Docker,
# containerd and podman cannot present a Google ID token (they answer a registry's challenge
# with Basic credentials or a registry token), so Cloud Run IAM cannot tell team members
# apart; with access = "team" the function itself checks every request (docs/security.md).
# Invoking a 2nd gen function is run.invoker on its Cloud Run service.
resource "google_cloud_run_service_iam_member" "registry_invokable_by_all" {
  #checkov:skip=CKV_GCP_102:Docker clients cannot send Google ID tokens, so the registry function must be invokable by allUsers; a team registry authenticates pulls in the function (var.access). The builder never gets this binding.
  project  = var.project_id
  location = google_cloudfunctions2_function.registry.location
  service  = google_cloudfunctions2_function.registry.service_config[0].service
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# docker pull needs the registry at the root of a host, over HTTPS: a domain the deploying
# account has verified, mapped to the function's Cloud Run service (docs/deploy.md).
resource "google_cloud_run_domain_mapping" "registry" {
  count = var.custom_domain != "" ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = var.custom_domain

  metadata {
    namespace = var.project_id
    labels    = var.labels
  }

  spec {
    # The Cloud Functions API reports the service as projects/.../services/NAME; a route names
    # the service alone.
    route_name = reverse(split("/", google_cloudfunctions2_function.registry.service_config[0].service))[0]
  }
}
