"""Settings, named as Nixery names them, from the environment with command-line overrides."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

DEFAULT_CHANNEL = "nixos-unstable"


class ConfigError(ValueError):
    pass


def _default_storage_path() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(data_home) / "nixery"


def find_nix_dir() -> Path:
    """`nix/` inside an installed package, else beside `functions/` in a checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "nix", package.parent.parent / "nix"):
        if (candidate / "resolve.nix").is_file():
            return candidate
    raise ConfigError("cannot find the nix/ expressions next to the nixery package")


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    channel: str | None = None
    pkgs_repo: str | None = None
    pkgs_path: Path | None = None
    storage_backend: Literal["filesystem", "gcs"] = "filesystem"
    storage_path: Path = field(default_factory=_default_storage_path)
    gcs_bucket: str | None = None
    nix_timeout: float = 600.0
    popularity_url: str | None = None
    layer_budget: int = 94
    # nixery.build.layering.PLANNERS; named here so the Cloud Function need not import networkx.
    layering: Literal["per-path", "nixery"] = "per-path"
    threads: int = 16
    layer_workers: int = 2
    lease_seconds: float = 60.0
    build_concurrency: int = 4
    # The cloud deployment's settings (see docs/cloud.md).
    gcp_project: str | None = None
    firestore_database: str = "(default)"
    firestore_prefix: str = ""
    builder_url: str | None = None
    build_wait: float = 540.0
    signed_url_expiry: float = 900.0
    id_token_key_file: Path | None = None
    builder_audience: str | None = None
    id_token_public_keys: Path | None = None
    gcs_retry_seconds: float = 120.0
    # Access control (docs/security.md): who may pull, and the limits hostile clients meet.
    access: Literal["public", "team"] = "public"
    team_members: str | None = None
    team_domains: str | None = None
    team_audiences: str | None = None
    robot_tokens: str | None = None
    tokeninfo_url: str = "https://oauth2.googleapis.com/tokeninfo"
    max_packages: int = 64
    client_build_limit: int = 2
    # Passed to the package set as nixpkgs' config (allowUnfree, permittedInsecurePackages).
    allow_unfree: bool = False
    permitted_insecure: str | None = None

    @property
    def source_kind(self) -> Literal["channel", "git", "path"]:
        """NIXERY_CHANNEL, then NIXERY_PKGS_REPO, then NIXERY_PKGS_PATH, as in Nixery."""
        if self.channel:
            return "channel"
        if self.pkgs_repo:
            return "git"
        if self.pkgs_path:
            return "path"
        return "channel"

    @property
    def effective_channel(self) -> str:
        return self.channel or DEFAULT_CHANNEL

    @property
    def permitted_insecure_packages(self) -> tuple[str, ...]:
        """NIXERY_PERMITTED_INSECURE: comma-separated names with versions ("openssl-1.1.1w")."""
        names = (self.permitted_insecure or "").split(",")
        return tuple(sorted({name.strip() for name in names if name.strip()}))

    @property
    def index_path(self) -> Path:
        return self.storage_path / "index.sqlite"

    @property
    def gcroots_dir(self) -> Path:
        return self.storage_path / "gcroots"


# Each setting: its field, its environment variable, and its command-line flag.
ENVIRONMENT = {
    "host": "NIXERY_HOST",
    "port": "PORT",
    "channel": "NIXERY_CHANNEL",
    "pkgs_repo": "NIXERY_PKGS_REPO",
    "pkgs_path": "NIXERY_PKGS_PATH",
    "storage_backend": "NIXERY_STORAGE_BACKEND",
    "storage_path": "STORAGE_PATH",
    "gcs_bucket": "GCS_BUCKET",
    "nix_timeout": "NIX_TIMEOUT",
    "popularity_url": "NIX_POPULARITY_URL",
    "layer_budget": "NIXERY_LAYER_BUDGET",
    "layering": "NIXERY_LAYERING",
    "threads": "NIXERY_THREADS",
    "layer_workers": "NIXERY_LAYER_WORKERS",
    "lease_seconds": "NIXERY_LEASE_SECONDS",
    "build_concurrency": "NIXERY_BUILD_CONCURRENCY",
    "gcp_project": "GOOGLE_CLOUD_PROJECT",
    "firestore_database": "NIXERY_FIRESTORE_DATABASE",
    "firestore_prefix": "NIXERY_FIRESTORE_PREFIX",
    "builder_url": "NIXERY_BUILDER_URL",
    "build_wait": "NIXERY_BUILD_WAIT",
    "signed_url_expiry": "NIXERY_SIGNED_URL_EXPIRY",
    "id_token_key_file": "NIXERY_ID_TOKEN_KEY_FILE",
    "builder_audience": "NIXERY_BUILDER_AUDIENCE",
    "id_token_public_keys": "NIXERY_ID_TOKEN_PUBLIC_KEYS",
    "gcs_retry_seconds": "NIXERY_GCS_RETRY_SECONDS",
    "access": "NIXERY_ACCESS",
    "team_members": "NIXERY_TEAM_MEMBERS",
    "team_domains": "NIXERY_TEAM_DOMAINS",
    "team_audiences": "NIXERY_TEAM_AUDIENCES",
    "robot_tokens": "NIXERY_ROBOT_TOKENS",
    "tokeninfo_url": "NIXERY_TOKENINFO_URL",
    "max_packages": "NIXERY_MAX_PACKAGES",
    "client_build_limit": "NIXERY_CLIENT_BUILD_LIMIT",
    "allow_unfree": "NIXERY_ALLOW_UNFREE",
    "permitted_insecure": "NIXERY_PERMITTED_INSECURE",
}
PATH_SETTINGS = ("pkgs_path", "storage_path", "id_token_key_file", "id_token_public_keys")

# Which settings each cloud component reads (nixery.cloud.function, nixery.cloud.builder, nixery.build.assemble), so that the
# deployment (terraform/, builder-image/Dockerfile) can be checked to set exactly these.
# Required: the deployment must set them. Optional: read, with defaults a deployment may keep.
# Not listed for a component: it never reads them there. Local development only, never set in
# the cloud: NIXERY_PKGS_PATH (needs a disk shared by function and builder),
# NIXERY_ID_TOKEN_KEY_FILE and NIXERY_ID_TOKEN_PUBLIC_KEYS (the metadata server and Google's
# certificates replace them), and PORT (Cloud Run sets it).
FUNCTION_SETTINGS = (
    "gcs_bucket",
    "gcp_project",
    "firestore_database",
    "firestore_prefix",
    "channel",
    "pkgs_repo",
    "builder_url",
    "build_wait",
    "access",
    "team_members",
    "team_domains",
    "team_audiences",
)
FUNCTION_OPTIONAL_SETTINGS = (
    "signed_url_expiry",
    "gcs_retry_seconds",
    "robot_tokens",
    "tokeninfo_url",
    "max_packages",
    "client_build_limit",
    "allow_unfree",
    "permitted_insecure",
)
# The builder takes the package source and policy from each build request, not its settings.
BUILDER_SETTINGS = (
    "gcs_bucket",
    "gcp_project",
    "firestore_database",
    "firestore_prefix",
    "storage_path",
)
BUILDER_OPTIONAL_SETTINGS = (
    "nix_timeout",
    "popularity_url",
    "layer_budget",
    "layering",
    "layer_workers",
    "build_concurrency",
    "lease_seconds",
    "gcs_retry_seconds",
    "builder_audience",
)


def _positive_number(name: str, raw: str, kind: type[int] | type[float]) -> int | float:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def load_config(env: Mapping[str, str], overrides: Mapping[str, str | None]) -> Config:
    """Build the config from `env`, with non-None `overrides` (command-line flags) winning."""
    raw: dict[str, str] = {}
    for name, variable in ENVIRONMENT.items():
        value = overrides.get(name)
        if value is None:
            value = env.get(variable) or None
        if value is not None:
            raw[name] = value
    values: dict[str, object] = {}
    types = {f.name: f.type for f in fields(Config)}
    for name, value in raw.items():
        label = ENVIRONMENT[name]
        kind = types[name]
        if kind == "int":
            number = _positive_number(label, value, int)
            if name == "port" and number > 65535:
                raise ConfigError(f"{label} must be a TCP port (1-65535), got {value!r}")
            values[name] = number
        elif kind == "float":
            values[name] = _positive_number(label, value, float)
        elif kind == "bool":
            values[name] = _boolean(label, value)
        elif name in PATH_SETTINGS:
            values[name] = Path(value).expanduser().absolute()
        else:
            values[name] = value
    config = Config(**values)  # type: ignore[arg-type]
    _validate(config)
    return config


def _validate(config: Config) -> None:
    if config.storage_backend not in ("filesystem", "gcs"):
        raise ConfigError(
            f"NIXERY_STORAGE_BACKEND must be 'filesystem' or 'gcs', got {config.storage_backend!r}"
        )
    if config.access not in ("public", "team"):
        raise ConfigError(f"NIXERY_ACCESS must be 'public' or 'team', got {config.access!r}")
    if config.storage_backend == "gcs" and not config.gcs_bucket:
        raise ConfigError("NIXERY_STORAGE_BACKEND=gcs needs GCS_BUCKET")
    if not 60 <= config.signed_url_expiry <= 604800:
        # V4 signed URLs live at most 7 days; below a minute a slow client could not start.
        raise ConfigError(
            "NIXERY_SIGNED_URL_EXPIRY must be between 60 and 604800 seconds (7 days), "
            f"got {config.signed_url_expiry:g}"
        )
    if config.source_kind == "path" and config.pkgs_path and not config.pkgs_path.exists():
        raise ConfigError(f"NIXERY_PKGS_PATH {config.pkgs_path} does not exist")
    if config.layering not in ("per-path", "nixery"):
        raise ConfigError(
            f"NIXERY_LAYERING must be 'per-path' or 'nixery', got {config.layering!r}"
        )
    if config.layer_budget < 2 or config.layer_budget > 120:
        raise ConfigError(
            "NIXERY_LAYER_BUDGET must be between 2 and 120 (Docker allows 125 layers)"
        )
