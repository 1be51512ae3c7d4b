# Garbage collection: Cloud Scheduler POSTs to the builder's /gc once a day with an OIDC token
# of its own service account, the builder's only other invoker (nixery.index.gc; docs/deploy.md,
# "Costs with garbage collection").

resource "google_service_account" "gc_scheduler" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-gc"
  display_name = "nixery garbage collection"
  description  = "Identity of the Cloud Scheduler job that runs the builder's garbage collection: invokes the builder, nothing else."

  depends_on = [google_project_service.apis]
}

resource "google_cloud_run_service_iam_member" "scheduler_invokes_builder" {
  project  = var.project_id
  location = google_cloud_run_v2_service.builder.location
  service  = google_cloud_run_v2_service.builder.name
  role     = "roles/run.invoker"
  member   = google_service_account.gc_scheduler.member
}

resource "google_cloud_scheduler_job" "gc" {
  project     = var.project_id
  region      = var.region
  name        = "${var.name_prefix}-gc"
  description = "nixery garbage collection: images not pulled for NIXERY_GC_RETENTION_DAYS, then what only they used."
  schedule    = var.gc_schedule
  time_zone   = "Etc/UTC"
  # An HTTP target waits at most 30 minutes; the builder's request timeout may be shorter.
  attempt_deadline = "${min(var.builder_timeout_seconds, 1800)}s"

  retry_config {
    retry_count = 1
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloud_run_v2_service.builder.uri}/gc"

    oidc_token {
      service_account_email = google_service_account.gc_scheduler.email
      # Cloud Run accepts its service URL as the token's audience.
      audience = google_cloud_run_v2_service.builder.uri
    }
  }

  depends_on = [
    google_project_service.apis,
    google_cloud_run_service_iam_member.scheduler_invokes_builder,
  ]
}
