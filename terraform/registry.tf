# The registry: a Cloud Function (2nd gen) serving the OCI distribution API at the root of
# its run.app host.
resource "google_cloudfunctions2_function" "registry" {
  #checkov:skip=CKV_GCP_124:A registry must be reachable by docker/podman/containerd clients on the internet; who may pull is decided by Cloud Run IAM (var.public / var.invokers), not by ingress.
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
  }

  lifecycle {
    precondition {
      # A build answer that arrives after the function's own timeout is lost (docs/cloud.md).
      condition     = var.build_wait_seconds < var.function_timeout_seconds
      error_message = "build_wait_seconds must be below function_timeout_seconds."
    }
  }

  depends_on = [
    google_project_service.apis,
    google_project_iam_member.function_build_writes_logs,
    google_project_iam_member.function_build_reads_sources,
    google_artifact_registry_repository_iam_member.function_build_pushes_image,
    google_storage_bucket_iam_member.registry_reads_blobs,
    google_project_iam_member.registry_uses_firestore,
    google_service_account_iam_member.registry_signs_as_itself,
    google_cloud_run_service_iam_member.function_invokes_builder,
  ]
}

# Who may pull. Invoking a 2nd gen function is run.invoker on its Cloud Run service.

resource "google_cloud_run_service_iam_member" "registry_public" {
  #checkov:skip=CKV_GCP_102:Created only when var.public is true: a public registry lets anyone pull, as Docker Hub does. The builder never gets this binding.
  count = var.public ? 1 : 0

  project  = var.project_id
  location = google_cloudfunctions2_function.registry.location
  service  = google_cloudfunctions2_function.registry.service_config[0].service
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_service_iam_member" "registry_invokers" {
  for_each = var.public ? toset([]) : toset(var.invokers)

  project  = var.project_id
  location = google_cloudfunctions2_function.registry.location
  service  = google_cloudfunctions2_function.registry.service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value
}
