variable "project_id" {
  description = "Google Cloud project that holds the whole deployment."
  type        = string
}

variable "region" {
  description = "Region of the function, the builder, the Artifact Registry repository and (by default) the buckets and Firestore."
  type        = string
  default     = "us-central1"
}

variable "name_prefix" {
  description = "Prefix of every resource name, so that several registries can share a project."
  type        = string
  default     = "nixery"

  validation {
    # Service account ids allow 6-30 characters; the longest suffix used is "-fn-build" (9).
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.name_prefix))
    error_message = "name_prefix must be 3-21 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "labels" {
  description = "Labels put on the buckets, the builder, the function and the repository."
  type        = map(string)
  default     = {}
}

# --- Who may pull -----------------------------------------------------------------------------

variable "access" {
  description = "\"public\": anyone may pull. \"team\": only team_members, members of team_domains (by their Google identity) and robot tokens may; the function checks every request (NIXERY_ACCESS)."
  type        = string

  validation {
    condition     = contains(["public", "team"], var.access)
    error_message = "access must be \"public\" or \"team\"."
  }
}

variable "team_members" {
  description = "E-mail addresses of the Google accounts that may pull from a team registry (NIXERY_TEAM_MEMBERS)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for member in var.team_members : can(regex("^[^@,\\s]+@[^@,\\s]+$", member))])
    error_message = "team_members are plain e-mail addresses, e.g. \"alice@example.com\"."
  }
}

variable "team_domains" {
  description = "Domains whose Google accounts may all pull from a team registry, e.g. [\"example.com\"] (NIXERY_TEAM_DOMAINS)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for domain in var.team_domains : can(regex("^[a-z0-9.-]+\\.[a-z]{2,}$", domain))])
    error_message = "team_domains are lowercase domain names without \"@\", e.g. \"example.com\"."
  }
}

variable "team_audiences" {
  description = "OAuth client ids a team member's access token may be issued to (NIXERY_TEAM_AUDIENCES; docs/security.md), e.g. gcloud's. Empty: the audience is not checked."
  type        = list(string)
  default     = []
}

variable "robot_tokens_secret_id" {
  description = "Secret Manager secret (id in project_id) holding the salted hashes of robot tokens, for CI (NIXERY_ROBOT_TOKENS; docs/deploy.md). Empty: no robot tokens."
  type        = string
  default     = ""
}

variable "robot_tokens_secret_version" {
  description = "Version of the robot token secret the function reads when an instance starts."
  type        = string
  default     = "latest"
}

variable "max_packages" {
  description = "Most packages in one image name (NIXERY_MAX_PACKAGES)."
  type        = number
  default     = 64
}

variable "platforms" {
  description = "Platforms a tag is built for (NIXERY_PLATFORMS); more than one serves an image index. The builder must be able to build for each (Nix extra-platforms or a remote builder)."
  type        = list(string)
  default     = ["linux/amd64"]
}

variable "client_build_limit" {
  description = "Builds one client may have running at once (NIXERY_CLIENT_BUILD_LIMIT)."
  type        = number
  default     = 2
}

variable "custom_domain" {
  description = "A host name, verified for the deploying account, to serve the registry at (docker pull <domain>/shell/git). Empty: the function's run.app host."
  type        = string
  default     = ""
}

# --- Package source ---------------------------------------------------------------------------

variable "allow_unfree" {
  description = "Build packages with unfree licences (NIXERY_ALLOW_UNFREE, nixpkgs' config.allowUnfree). Part of the image key when true."
  type        = bool
  default     = false
}

variable "permitted_insecure_packages" {
  description = "Insecure packages to build anyway, as nixpkgs names them with their versions, e.g. [\"openssl-1.1.1w\"] (NIXERY_PERMITTED_INSECURE, nixpkgs' config.permittedInsecurePackages)."
  type        = list(string)
  default     = []
}

variable "nixpkgs_channel" {
  description = "nixpkgs channel (or commit) images are built from (NIXERY_CHANNEL). Ignored when pkgs_repo is set."
  type        = string
  default     = "nixos-unstable"
}

variable "pkgs_repo" {
  description = "Git repository of a package set (NIXERY_PKGS_REPO); when set it replaces the channel. The function runs `git ls-remote` on it."
  type        = string
  default     = ""
}

# --- Storage and index ------------------------------------------------------------------------

variable "blob_bucket_name" {
  description = "Name of the blob bucket; empty means \"<project_id>-<name_prefix>-blobs\"."
  type        = string
  default     = ""
}

variable "bucket_location" {
  description = "Location of both buckets; empty means var.region (same region as the builder: no egress charge)."
  type        = string
  default     = ""
}

variable "blob_soft_delete_seconds" {
  description = "How long deleted blobs stay restorable (and billed) in the blob bucket; 0 turns soft delete off, since a deleted blob is rebuilt on demand. Google's default is 604800 (7 days)."
  type        = number
  default     = 0

  validation {
    # What GCS accepts: off, or 7 to 90 days.
    condition     = var.blob_soft_delete_seconds == 0 || (var.blob_soft_delete_seconds >= 604800 && var.blob_soft_delete_seconds <= 7776000)
    error_message = "blob_soft_delete_seconds is 0 or between 604800 (7 days) and 7776000 (90 days)."
  }
}

variable "force_destroy_buckets" {
  description = "Let `terraform destroy` delete buckets that still hold objects."
  type        = bool
  default     = false
}

variable "create_firestore_database" {
  description = "Create a Firestore (native mode) database named var.firestore_database. false: use an existing one, e.g. \"(default)\"."
  type        = bool
  default     = true
}

variable "firestore_database" {
  description = "Firestore database id (NIXERY_FIRESTORE_DATABASE): the one created, or the existing one when create_firestore_database is false."
  type        = string
  default     = "nixery"
}

variable "firestore_location" {
  description = "Location of a created Firestore database; empty means var.region."
  type        = string
  default     = ""
}

variable "firestore_prefix" {
  description = "Prefix of every collection name (NIXERY_FIRESTORE_PREFIX), for several registries in one database."
  type        = string
  default     = ""
}

# --- Builder (Cloud Run) ----------------------------------------------------------------------

variable "builder_image" {
  description = "The builder image, built from builder-image/Dockerfile and pushed to the repository this module creates (output builder_image_repository), with a new tag per build."
  type        = string
}

variable "builder_cpu" {
  description = "vCPUs of one builder instance (Cloud Run allows 1, 2, 4, 8)."
  type        = string
  default     = "4"
}

variable "builder_memory" {
  description = "Memory of one builder instance; Nix builds and the /nix store (in memory on Cloud Run) live here."
  type        = string
  default     = "8Gi"
}

variable "builder_max_instances" {
  description = "Most builder instances at once."
  type        = number
  default     = 4
}

variable "builder_request_concurrency" {
  description = "Build requests one builder instance takes at once; waiting requests for the same image share one build. At most the image's THREADS (16)."
  type        = number
  default     = 16
}

variable "builder_timeout_seconds" {
  description = "Cloud Run request timeout of the builder (at most 3600)."
  type        = number
  default     = 3600

  validation {
    condition     = var.builder_timeout_seconds >= 60 && var.builder_timeout_seconds <= 3600
    error_message = "builder_timeout_seconds must be between 60 and 3600."
  }
}

variable "nix_timeout_seconds" {
  description = "Seconds for the whole Nix step of one build (NIX_TIMEOUT)."
  type        = number
  default     = 600
}

variable "layer_budget" {
  description = "Store-path layers per image (NIXERY_LAYER_BUDGET, 1-120)."
  type        = number
  default     = 64
}

variable "layering" {
  description = "How store paths are grouped into layers (NIXERY_LAYERING): \"chunked\" (prefix-stable chunks of about 2 MB), \"per-path\" (one layer per path, merging beyond the budget), \"prefix\" (one layer per path in a path-determined order) or \"nixery\" (Nixery's popularity and dominator grouping)."
  type        = string
  default     = "chunked"

  validation {
    condition     = contains(["chunked", "per-path", "prefix", "nixery"], var.layering)
    error_message = "layering is \"chunked\", \"per-path\", \"prefix\" or \"nixery\"."
  }
}

variable "substituters" {
  description = "Binary caches the builder makes layers from directly, without realising the closure (NIXERY_SUBSTITUTERS); empty: always realise with Nix."
  type        = list(string)
  default     = ["https://cache.nixos.org"]
}

variable "trusted_public_keys" {
  description = "Keys (name:base64) one of which must sign every narinfo the builder uses (NIXERY_TRUSTED_PUBLIC_KEYS)."
  type        = list(string)
  default     = ["cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="]
}

variable "build_concurrency" {
  description = "Builds of different images at once per builder instance (NIXERY_BUILD_CONCURRENCY)."
  type        = number
  default     = 4
}

variable "lease_seconds" {
  description = "Build lease lifetime (NIXERY_LEASE_SECONDS); a dead builder's lease expires after this."
  type        = number
  default     = 60
}

variable "deletion_protection" {
  description = "Refuse to let Terraform delete (or replace) the builder service."
  type        = bool
  default     = false
}

# --- Registry function (Cloud Functions 2nd gen) ----------------------------------------------

variable "function_runtime" {
  description = "Python runtime of the registry function."
  type        = string
  default     = "python312"
}

variable "function_memory" {
  description = "Memory of one function instance."
  type        = string
  default     = "512Mi"
}

variable "function_cpu" {
  description = "vCPUs of one function instance."
  type        = string
  default     = "1"
}

variable "function_max_instances" {
  description = "Most function instances at once."
  type        = number
  default     = 10
}

variable "function_request_concurrency" {
  description = "Requests one function instance serves at once (also functions-framework's THREADS: a request waiting for a build holds a thread)."
  type        = number
  default     = 32
}

variable "function_timeout_seconds" {
  description = "Request timeout of the registry function; must exceed build_wait_seconds."
  type        = number
  default     = 1800

  validation {
    condition     = var.function_timeout_seconds > 0 && var.function_timeout_seconds <= 3600
    error_message = "function_timeout_seconds must be between 1 and 3600 (HTTP functions run up to 60 minutes)."
  }
}

variable "build_wait_seconds" {
  description = "Seconds the function waits for a build before answering 503 (NIXERY_BUILD_WAIT): above nix_timeout_seconds, so that a build normally ends inside the request that started it (the builder has CPU only while it serves a request), and below function_timeout_seconds."
  type        = number
  default     = 1500
}

variable "signed_url_expiry_seconds" {
  description = "Lifetime of a signed blob URL (NIXERY_SIGNED_URL_EXPIRY)."
  type        = number
  default     = 900
}

variable "gc_schedule" {
  description = "When Cloud Scheduler runs garbage collection (the builder's /gc), in cron syntax, UTC."
  type        = string
  default     = "17 3 * * *"
}

variable "gc_retention_days" {
  description = "Images not pulled by tag for this many days are deleted, then the blobs only they used (NIXERY_GC_RETENTION_DAYS; at least 1)."
  type        = number
  default     = 30

  validation {
    condition     = var.gc_retention_days >= 1
    error_message = "gc_retention_days must be at least 1: a registry instance re-checks the images it holds in memory once a day."
  }
}

variable "gc_grace_seconds" {
  description = "Nothing put or used more recently is collected (NIXERY_GC_GRACE_SECONDS): keep it above the builder's timeout, so it covers builds in flight."
  type        = number
  default     = 3600
}

variable "build_records" {
  description = "Build records kept for the landing page and /builds/<id> (NIXERY_BUILD_RECORDS); the builder's garbage collection prunes to it too."
  type        = number
  default     = 1000
}

variable "build_record_days" {
  description = "Days a build record is kept (NIXERY_BUILD_RECORD_DAYS)."
  type        = number
  default     = 30
}
