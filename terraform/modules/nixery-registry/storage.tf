# Blobs: layers and configs under blobs/sha256/<hex>, uploads staged under staging/<uuid>.
# Clients never read the bucket directly: the function redirects them to V4 signed URLs,
# which work with public access prevention enforced.
resource "google_storage_bucket" "blobs" {
  #checkov:skip=CKV_GCP_62:Access logs would be one more bucket per registry; every read is by a signed URL the function issued, and Cloud Audit Logs can record data access when needed.
  #checkov:skip=CKV_GCP_78:Blobs are content-addressed and written once under their digest; versioning would only keep deleted staging uploads.
  name                        = local.blob_bucket_name
  project                     = var.project_id
  location                    = local.bucket_location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets
  labels                      = var.labels

  # Deleted blobs are rebuilt on demand, so by default they are not kept (and billed) after
  # deletion; raise it to be able to restore them.
  soft_delete_policy {
    retention_duration_seconds = var.blob_soft_delete_seconds
  }

  # A killed builder can leave a resumable upload in staging/; finished ones are deleted.
  lifecycle_rule {
    condition {
      age            = 1
      matches_prefix = ["staging/"]
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# The registry function's source archives, one object per content hash.
resource "google_storage_bucket" "function_source" {
  #checkov:skip=CKV_GCP_62:Only Terraform and Cloud Functions deployments read this bucket; Cloud Audit Logs cover it.
  #checkov:skip=CKV_GCP_78:Each source archive is a new object named by its hash; older versions are never overwritten.
  name                        = "${local.blob_bucket_name}-src"
  project                     = var.project_id
  location                    = local.bucket_location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  labels                      = var.labels

  depends_on = [google_project_service.apis]
}

# `functions/` of this checkout, deployed as the registry function (README "Cloud mode").
data "archive_file" "function_source" {
  type             = "zip"
  source_dir       = "${path.module}/../../../functions"
  output_path      = "${path.root}/.build/registry-source.zip"
  output_file_mode = "0644"
  # Tests never run in the function, and caches differ between machines and Python versions:
  # either would change the hash (and redeploy) without a code change.
  excludes = [
    "**/__pycache__",
    "**/__pycache__/**",
    "**/*.pyc",
    "**/.pytest_cache/**",
    "**/.ruff_cache/**",
    "**/.mypy_cache/**",
    "**/tests/**",
    "**/test_*.py",
    "**/*_test.py",
    "**/conftest.py",
  ]
}

resource "google_storage_bucket_object" "function_source" {
  # The hash in the name makes a code change a new object, hence a new function deployment.
  name         = "registry-${data.archive_file.function_source.output_md5}.zip"
  bucket       = google_storage_bucket.function_source.name
  source       = data.archive_file.function_source.output_path
  content_type = "application/zip"
}
