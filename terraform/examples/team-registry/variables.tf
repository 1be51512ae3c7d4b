variable "project_id" {
  description = "Google Cloud project of the registry."
  type        = string
}

variable "region" {
  description = "Region of every part of the registry."
  type        = string
  default     = "europe-west1"
}

variable "name_prefix" {
  description = "Prefix of every resource name (and the Artifact Registry repository id)."
  type        = string
  default     = "nixery"
}

variable "access" {
  description = "\"public\" or \"team\"."
  type        = string
  default     = "team"
}

variable "team_members" {
  description = "E-mail addresses that may pull from a team registry."
  type        = list(string)
  default     = []
}

variable "team_domains" {
  description = "Domains whose accounts may all pull from a team registry."
  type        = list(string)
  default     = []
}

variable "team_audiences" {
  description = "OAuth client ids team members' tokens may be issued to (docs/security.md); empty: not checked."
  type        = list(string)
  default     = []
}

variable "robot_tokens_secret_id" {
  description = "Secret Manager secret with the robot token hashes (CI pulls); empty for none."
  type        = string
  default     = ""
}

variable "robot_tokens_secret_version" {
  description = "Version of that secret the function reads; set the new version's number after adding one, so that the function redeploys."
  type        = string
  default     = "latest"
}

variable "custom_domain" {
  description = "Verified host name for the registry; empty for the run.app host."
  type        = string
  default     = ""
}

variable "builder_image_tag" {
  description = "Tag of the builder image pushed by builder-image/cloudbuild.yaml (a new one per build, e.g. the commit)."
  type        = string
}

variable "builder_cpu" {
  description = "vCPUs of one builder instance."
  type        = string
  default     = "4"
}

variable "builder_memory" {
  description = "Memory of one builder instance (also holds the /nix store)."
  type        = string
  default     = "8Gi"
}

variable "deletion_protection" {
  description = "Refuse to let Terraform delete the builder service (set false before `terraform destroy`)."
  type        = bool
  default     = true
}

variable "force_destroy_buckets" {
  description = "Let `terraform destroy` delete the buckets with the blobs in them (set true before tearing down)."
  type        = bool
  default     = false
}

variable "builder_max_instances" {
  description = "Most builder instances at once: the cap on parallel build spend."
  type        = number
  default     = 4
}

variable "client_build_limit" {
  description = "Cold builds one client may have running at once."
  type        = number
  default     = 2
}
