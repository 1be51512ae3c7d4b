# Holds the builder image (builder-image/cloudbuild.yaml pushes it, docs/deploy.md) and the
# registry function's container, which Cloud Functions' build pushes here.
resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:The images hold public code (nixery and its PyPI dependencies); Google-managed encryption suffices and a KMS key would cost more than the rest of the deployment at rest.
  project       = var.project_id
  location      = var.region
  repository_id = var.name_prefix
  format        = "DOCKER"
  description   = "nixery builder image and registry function container"
  labels        = var.labels

  depends_on = [google_project_service.apis]
}

# The builder: Nix in a container, reached only by the registry function with an ID token.
resource "google_cloud_run_v2_service" "builder" {
  name     = "${var.name_prefix}-builder"
  project  = var.project_id
  location = var.region
  # The function calls the builder's run.app URL from outside any VPC; Cloud Run IAM, not the
  # network, keeps everyone else out.
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection
  labels              = var.labels

  template {
    service_account                  = google_service_account.builder.email
    timeout                          = "${var.builder_timeout_seconds}s"
    max_instance_request_concurrency = var.builder_request_concurrency
    # Second generation: a full Linux kernel interface for Nix, rather than gVisor's.
    execution_environment = "EXECUTION_ENVIRONMENT_GEN2"

    scaling {
      min_instance_count = 0
      max_instance_count = var.builder_max_instances
    }

    containers {
      # No command or args: the image's CMD serves the `build` function on $PORT, which Cloud
      # Run sets to container_port (tests/test_builder_image.py checks the two agree).
      image = var.builder_image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.builder_cpu
          memory = var.builder_memory
        }
        # CPU only while requests run: a build runs inside the function's request to it.
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.builder_env
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }

  depends_on = [
    google_project_service.apis,
    google_storage_bucket_iam_member.builder_writes_blobs,
    google_project_iam_member.builder_uses_firestore,
  ]
}

# The only invoker of the builder. This is the Cloud Run v1 IAM resource on purpose: it
# manages the same policy as the v2 one, and checkov's CKV_GCP_102 (no allUsers invoker)
# covers it.
resource "google_cloud_run_service_iam_member" "function_invokes_builder" {
  project  = var.project_id
  location = google_cloud_run_v2_service.builder.location
  service  = google_cloud_run_v2_service.builder.name
  role     = "roles/run.invoker"
  member   = google_service_account.registry.member
}
