resource "google_firestore_database" "index" {
  count = var.create_firestore_database ? 1 : 0

  project     = var.project_id
  name        = var.firestore_database
  location_id = local.firestore_location
  type        = "FIRESTORE_NATIVE"
  # Every record can be rebuilt from the package source: a lost index costs builds, not data.
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_DISABLED"
  delete_protection_state           = "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = "DELETE"

  depends_on = [google_project_service.apis]
}

# Deletes abandoned build leases (docs/firestore-model.md, "leases"). TTL deletion runs within
# about a day; correctness never depends on it, only storage does.
resource "google_firestore_field" "lease_ttl" {
  project    = var.project_id
  database   = local.firestore_database
  collection = local.leases_collection
  field      = "expires_at"

  # An empty ttl_config enables the TTL policy on the field.
  ttl_config {}

  depends_on = [google_firestore_database.index]
}

# manifests.body holds the exact manifest bytes and is never queried: exempting it from
# single-field indexing saves index writes (docs/firestore-model.md, "Indexes").
resource "google_firestore_field" "manifest_body_unindexed" {
  project    = var.project_id
  database   = local.firestore_database
  collection = local.manifests_collection
  field      = "body"

  # An empty index_config disables every index on the field.
  index_config {}

  depends_on = [google_firestore_database.index]
}
