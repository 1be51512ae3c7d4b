# nixery-serverless on Google Cloud: a Cloud Function answers the registry API, a private
# Cloud Run service builds images with Nix, GCS holds blobs and Firestore the index
# (docs/cloud.md). Everything scales to zero and is paid per use. docs/deploy.md is the guide.

locals {
  blob_bucket_name   = var.blob_bucket_name != "" ? var.blob_bucket_name : "${var.project_id}-${var.name_prefix}-blobs"
  bucket_location    = var.bucket_location != "" ? var.bucket_location : var.region
  firestore_location = var.firestore_location != "" ? var.firestore_location : var.region
  firestore_database = var.create_firestore_database ? google_firestore_database.index[0].name : var.firestore_database

  # The Firestore index names its collections prefix + "images", ..., prefix + "leases"
  # (functions/nixery/index/firestore.py).
  leases_collection    = "${var.firestore_prefix}leases"
  manifests_collection = "${var.firestore_prefix}manifests"

  # nixery.config prefers NIXERY_CHANNEL to NIXERY_PKGS_REPO and treats an empty value as
  # unset, so a configured repository empties the channel.
  nixpkgs_channel = var.pkgs_repo != "" ? "" : var.nixpkgs_channel

  # docker pull needs the registry at the root of a host: the custom domain when there is one,
  # else the function's own run.app host.
  function_uri  = google_cloudfunctions2_function.registry.service_config[0].uri
  registry_host = var.custom_domain != "" ? var.custom_domain : trimprefix(local.function_uri, "https://")

  # The builder's environment: exactly nixery.config.BUILDER_SETTINGS plus the optional ones
  # a deployment tunes (tests/test_terraform.py checks both ways). The image sets STORAGE_PATH,
  # WORKERS and THREADS (builder-image/Dockerfile). The package source is not here: each build
  # request carries it. NIXERY_BUILDER_AUDIENCE is not set: the builder's own URL would make the
  # service depend on itself, and Cloud Run IAM already rejects every token that is not meant
  # for this service or not from an invoker (builder.tf, function_invokes_builder).
  builder_env = {
    GCS_BUCKET                = google_storage_bucket.blobs.name
    GOOGLE_CLOUD_PROJECT      = var.project_id
    NIXERY_FIRESTORE_DATABASE = local.firestore_database
    NIXERY_FIRESTORE_PREFIX   = var.firestore_prefix
    NIX_TIMEOUT               = tostring(var.nix_timeout_seconds)
    NIXERY_LAYER_BUDGET       = tostring(var.layer_budget)
    NIXERY_LAYERING           = var.layering
    NIXERY_BUILD_CONCURRENCY  = tostring(var.build_concurrency)
    NIXERY_LEASE_SECONDS      = tostring(var.lease_seconds)
    # Garbage collection (the builder's /gc, run by gc.tf's Cloud Scheduler job).
    NIXERY_GC_RETENTION_DAYS = tostring(var.gc_retention_days)
    NIXERY_GC_GRACE_SECONDS  = tostring(var.gc_grace_seconds)
    NIXERY_BUILD_RECORDS     = tostring(var.build_records)
    NIXERY_BUILD_RECORD_DAYS = tostring(var.build_record_days)
    # Layers straight from the binary cache's NARs; paths it lacks are realised by Nix
    # (docs/cloud.md). The builder image's Nix uses the same cache and key.
    NIXERY_SUBSTITUTERS        = join(" ", var.substituters)
    NIXERY_TRUSTED_PUBLIC_KEYS = join(" ", var.trusted_public_keys)
  }

  # The registry function's environment (nixery.config.FUNCTION_SETTINGS and tuned optional
  # ones). NIXERY_ROBOT_TOKENS comes from Secret Manager (registry.tf), never from here.
  function_env = {
    GCS_BUCKET                = google_storage_bucket.blobs.name
    GOOGLE_CLOUD_PROJECT      = var.project_id
    NIXERY_FIRESTORE_DATABASE = local.firestore_database
    NIXERY_FIRESTORE_PREFIX   = var.firestore_prefix
    NIXERY_CHANNEL            = local.nixpkgs_channel
    NIXERY_PKGS_REPO          = var.pkgs_repo
    NIXERY_BUILDER_URL        = google_cloud_run_v2_service.builder.uri
    NIXERY_BUILD_WAIT         = tostring(var.build_wait_seconds)
    NIXERY_SIGNED_URL_EXPIRY  = tostring(var.signed_url_expiry_seconds)
    NIXERY_ACCESS             = var.access
    NIXERY_TEAM_MEMBERS       = join(",", var.team_members)
    NIXERY_TEAM_DOMAINS       = join(",", var.team_domains)
    NIXERY_TEAM_AUDIENCES     = join(",", var.team_audiences)
    NIXERY_MAX_PACKAGES       = tostring(var.max_packages)
    NIXERY_CLIENT_BUILD_LIMIT = tostring(var.client_build_limit)
    NIXERY_PLATFORMS          = join(",", var.platforms)
    # The package policy travels with each build request, so only the function reads it.
    NIXERY_ALLOW_UNFREE       = tostring(var.allow_unfree)
    NIXERY_PERMITTED_INSECURE = join(",", var.permitted_insecure_packages)
    # functions-framework's gunicorn threads: one per request the instance accepts, since a
    # request waiting for a build holds its thread.
    THREADS = tostring(var.function_request_concurrency)
  }

  apis = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    # The daily garbage collection job (gc.tf).
    "cloudscheduler.googleapis.com",
    "firestore.googleapis.com",
    # Creating the two runtime service accounts and their grants.
    "iam.googleapis.com",
    # signBlob for the function's signed blob URLs.
    "iamcredentials.googleapis.com",
    "run.googleapis.com",
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "apis" {
  for_each = local.apis

  project = var.project_id
  service = each.value
  # Other workloads of the project may use the same APIs.
  disable_on_destroy = false
}

# Only a registry with robot tokens reads a secret.
resource "google_project_service" "secret_manager" {
  count = var.robot_tokens_secret_id != "" ? 1 : 0

  project            = var.project_id
  service            = "secretmanager.googleapis.com"
  disable_on_destroy = false
}
