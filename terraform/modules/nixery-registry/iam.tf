# Runtime identities, least privilege: the registry function reads blobs, signs URLs for them,
# calls the builder (and reads the robot token secret, if any); the builder writes blobs. Both
# use the Firestore index. Nothing else is granted (tests/test_terraform.py checks the set).

resource "google_service_account" "registry" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-registry"
  display_name = "nixery registry function"
  description  = "Runtime identity of the registry Cloud Function: reads blobs and the index, signs blob URLs, invokes the builder."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "builder" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-builder"
  display_name = "nixery builder"
  description  = "Runtime identity of the Cloud Run builder: writes blobs, records images and leases in the index."

  depends_on = [google_project_service.apis]
}

# Cloud Build builds the function's container under this identity rather than the project's
# default compute account, which new projects create without roles.
resource "google_service_account" "function_build" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-fn-build"
  display_name = "nixery registry function build"
  description  = "Cloud Build identity that builds the registry function's container."

  depends_on = [google_project_service.apis]
}

# --- Registry function ------------------------------------------------------------------------

resource "google_storage_bucket_iam_member" "registry_reads_blobs" {
  bucket = google_storage_bucket.blobs.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.registry.member
}

resource "google_project_iam_member" "registry_uses_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.registry.member
}

# Without a key file the function signs blob URLs with IAM signBlob as itself
# (nixery.cloud.signing): the grant is on its own account only, never project-wide.
resource "google_service_account_iam_member" "registry_signs_as_itself" {
  service_account_id = google_service_account.registry.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_service_account.registry.member
}

# The robot token hashes (NIXERY_ROBOT_TOKENS): that one secret, nothing project-wide.
resource "google_secret_manager_secret_iam_member" "registry_reads_robot_tokens" {
  count = var.robot_tokens_secret_id != "" ? 1 : 0

  project   = var.project_id
  secret_id = var.robot_tokens_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.registry.member

  depends_on = [google_project_service.secret_manager]
}

# --- Builder ----------------------------------------------------------------------------------

# Writes staging/ uploads, copies them to blobs/sha256/, deletes the staged copies: object
# create, read and delete, without objectAdmin's IAM permissions.
resource "google_storage_bucket_iam_member" "builder_writes_blobs" {
  bucket = google_storage_bucket.blobs.name
  role   = "roles/storage.objectUser"
  member = google_service_account.builder.member
}

resource "google_project_iam_member" "builder_uses_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.builder.member
}

# --- Function build (Cloud Build) ---
# Build time only: Cloud Functions builds the function's container with Cloud Build under this
# identity; nothing at run time uses it.----------------------------------------------------------

resource "google_project_iam_member" "function_build_writes_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.function_build.member
}

# Cloud Functions copies the source archive into its own gcf-v2-sources-* bucket, which it
# creates on the first deployment: only a project-level grant can name it in advance.
resource "google_project_iam_member" "function_build_reads_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.function_build.member
}

resource "google_artifact_registry_repository_iam_member" "function_build_pushes_image" {
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.function_build.member
}
