# A reusable module: it states the provider versions it works with and configures no provider;
# the root configuration (examples/team-registry) pins them and sets project and region.
terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      # 6.0: deletion_protection on google_cloud_run_v2_service.
      source  = "hashicorp/google"
      version = ">= 6.0, < 7.0"
    }
    archive = {
      # 2.5 is the first release whose `excludes` accepts glob patterns (**/__pycache__).
      source  = "hashicorp/archive"
      version = ">= 2.5, < 3.0"
    }
  }
}
