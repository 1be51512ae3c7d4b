"""Settings, named as Nixery names them, from the environment with command-line overrides.

Each setting is declared once, as a field of `Config`: the annotation is its type (a `Literal`
lists its allowed values), and `setting(...)` gives its environment variable, default, help
text, bounds and the components that read it. Everything else reads that declaration:
`load_config` (parsing and start-up validation), the command-line flags and `--help`
(nixery.cli), the component lists the deployment is checked against (`FUNCTION_SETTINGS` and
the like; tests/test_terraform.py), the defaults other modules use (`Config.layer_budget`, ...)
and the settings tables of README.md (`markdown_table`; tests/test_settings.py compares them).

This module is imported by the Cloud Function: standard library only.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

DEFAULT_CHANNEL = "nixos-unstable"

# How a component reads a setting. "required": the deployment must set it; "optional": read,
# with a default a deployment may keep; "local": read only in local development (the dev
# stack), never set in the cloud. Absent: the component never reads it.
Need = Literal["required", "optional", "local"]
Component = Literal["serve", "function", "builder"]
# nixery.build.layering.PLANNERS; named here so the Cloud Function need not import networkx.
Layering = Literal["chunked", "nixery", "per-path", "prefix"]
# The keys of nixery.build.contract.PLATFORMS (tests/test_multiplatform.py checks they agree),
# named here so that settings are checked at start-up without importing the build side.
SUPPORTED_PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm64/v8")


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
class Bounds:
    """Inclusive limits of a number setting; `why` is told to whoever sets it outside them."""

    low: float
    high: float
    why: str


@dataclass(frozen=True)
class _Declared:
    variable: str
    help: str
    shown_default: str | None
    bounds: Bounds | None
    readers: Mapping[Component, Need]


_DECLARED = "nixery.setting"


def setting(
    variable: str,
    default: Any,
    help: str,
    *,
    shown_default: str | None = None,
    bounds: Bounds | None = None,
    serve: bool = False,
    function: Need | None = None,
    builder: Need | None = None,
) -> Any:
    """A `Config` field read from `variable`. A callable `default` is called for each Config.

    `shown_default`: how help and docs show the default, when not the value itself (a default
    computed at run time, or a None that means something); Markdown, like `help`."""
    readers: dict[Component, Need] = {}
    if serve:
        readers["serve"] = "required"
    if function:
        readers["function"] = function
    if builder:
        readers["builder"] = builder
    declared = _Declared(variable, help, shown_default, bounds, readers)
    if callable(default):
        return field(default_factory=default, metadata={_DECLARED: declared})
    return field(default=default, metadata={_DECLARED: declared})


@dataclass(frozen=True)
class Config:
    # Ordered as README.md's tables list them.
    port: int = setting("PORT", 8080, "TCP port", bounds=Bounds(1, 65535, "a TCP port"), serve=True)
    host: str = setting("NIXERY_HOST", "127.0.0.1", "address to listen on", serve=True)
    channel: str | None = setting(
        "NIXERY_CHANNEL",
        None,
        "nixpkgs channel or 40-hex commit",
        shown_default=f"`{DEFAULT_CHANNEL}`",
        serve=True,
        function="required",
    )
    pkgs_repo: str | None = setting(
        "NIXERY_PKGS_REPO",
        None,
        "git repository of a package set (the function needs `git` for `ls-remote`)",
        serve=True,
        function="required",
    )
    pkgs_path: Path | None = setting(
        "NIXERY_PKGS_PATH",
        None,
        "local package set (in the cloud only where function and builder share a disk: "
        "the dev stack)",
        serve=True,
        function="local",
    )
    storage_backend: Literal["filesystem", "gcs"] = setting(
        "NIXERY_STORAGE_BACKEND",
        "filesystem",
        "`serve` uses the filesystem; `gcs` is the cloud's (the function and builder always "
        "use GCS)",
        serve=True,
    )
    storage_path: Path = setting(
        "STORAGE_PATH",
        _default_storage_path,
        "`serve`: blobs, the SQLite index and GC roots; the builder: its GC roots",
        shown_default="`$XDG_DATA_HOME/nixery`",
        serve=True,
        builder="required",
    )
    gcs_bucket: str | None = setting(
        "GCS_BUCKET",
        None,
        "the blob bucket (the cloud deployment needs one)",
        function="required",
        builder="required",
    )
    gcp_project: str | None = setting(
        "GOOGLE_CLOUD_PROJECT",
        None,
        "project of the bucket and the Firestore database",
        shown_default="from the credentials",
        function="required",
        builder="required",
    )
    firestore_database: str = setting(
        "NIXERY_FIRESTORE_DATABASE",
        "(default)",
        "Firestore database id",
        function="required",
        builder="required",
    )
    firestore_prefix: str = setting(
        "NIXERY_FIRESTORE_PREFIX",
        "",
        "prefix of every collection name (several registries in one database)",
        shown_default="empty",
        function="required",
        builder="required",
    )
    builder_url: str | None = setting(
        "NIXERY_BUILDER_URL",
        None,
        "the builder's URL (the function needs it); also the ID token audience",
        function="required",
    )
    build_wait: float = setting(
        "NIXERY_BUILD_WAIT",
        540.0,
        "seconds the function waits for a build (keep under the function timeout)",
        function="required",
    )
    signed_url_expiry: float = setting(
        "NIXERY_SIGNED_URL_EXPIRY",
        900.0,
        "lifetime of a signed blob URL in seconds",
        # V4 signed URLs live at most 7 days; below a minute a slow client could not start.
        bounds=Bounds(60, 604800, "seconds: a V4 signed URL lives at most 7 days"),
        function="optional",
    )
    id_token_key_file: Path | None = setting(
        "NIXERY_ID_TOKEN_KEY_FILE",
        None,
        "local development only: mint (function) and verify (builder) ID tokens with this "
        "service-account key instead of the metadata server",
        function="local",
        builder="local",
    )
    builder_audience: str | None = setting(
        "NIXERY_BUILDER_AUDIENCE",
        None,
        "when set, the builder verifies ID tokens for this audience (Cloud Run IAM checks "
        "them too)",
        builder="optional",
    )
    id_token_public_keys: Path | None = setting(
        "NIXERY_ID_TOKEN_PUBLIC_KEYS",
        None,
        "JSON file of key id to public key PEM, to verify tokens offline",
        shown_default="Google's certificates",
        builder="local",
    )
    nix_timeout: float = setting(
        "NIX_TIMEOUT",
        600.0,
        "seconds for the whole Nix step of one build",
        serve=True,
        builder="optional",
    )
    popularity_url: str | None = setting(
        "NIX_POPULARITY_URL",
        None,
        "popularity data (Nixery's JSON), a path or URL",
        serve=True,
        builder="optional",
    )
    layer_budget: int = setting(
        "NIXERY_LAYER_BUDGET",
        # `chunked` cuts about one layer per 2 MB of store paths, so the budget only binds on
        # big images, where it merges everything past the last cut into one layer. Images of
        # a real distribution's shapes (hundreds of MB; benchmarks/bench_shapes.py) keep a
        # median 40 % of their bytes in that layer at 8; at 64, none, and content-addressed
        # clients download 1.2x what an image adds instead of 2.1x. Small images get the
        # same few layers at any budget (dockerd 20.10 pays 0.065-0.095 s per layer, 28.5
        # about 0.0125 s: benchmarks/bench_docker.py). Docker refuses images with more than
        # 125 layers: 64 leaves room for the layers of images built on these.
        64,
        "store-path layers per image (plus the symlink layer); `per-path` and `prefix` "
        "want more (Nixery used 94)",
        bounds=Bounds(1, 120, "Docker allows 125 layers"),
        serve=True,
        builder="optional",
    )
    layering: Layering = setting(
        "NIXERY_LAYERING",
        # Fewest seconds of real docker pulls, fresh and incremental together, of the layouts
        # that still share layers (benchmarks/bench_docker.py, BENCHMARKS.md "Docker pulls").
        "chunked",
        "`chunked`: store paths in an order that depends on the path alone, cut into chunks "
        "of about 2 MB at cut points that depend on the path alone, the rarest merged last; "
        "`per-path`: a layer per store path, the least valuable merged beyond the budget; "
        "`prefix`: a layer per store path in an order that depends on the path alone, the "
        "rarest merged last; `nixery`: Nixery's popularity and dominator-tree grouping. "
        "Changes image digests",
        serve=True,
        builder="optional",
    )
    threads: int = setting(
        "NIXERY_THREADS",
        64,
        "request threads; at most three quarters wait for cold builds (503 beyond)",
        serve=True,
    )
    layer_workers: int = setting(
        "NIXERY_LAYER_WORKERS",
        2,
        "layers compressed (and uploaded) in parallel",
        serve=True,
        builder="optional",
    )
    substituters: str | None = setting(
        "NIXERY_SUBSTITUTERS",
        None,
        "binary caches (space-separated URLs) whose NARs become layers directly, without "
        "realising the closure; paths missing there are realised by Nix; empty: always realise",
        shown_default="the Nix configuration's `substituters`",
        serve=True,
        builder="optional",
    )
    trusted_public_keys: str | None = setting(
        "NIXERY_TRUSTED_PUBLIC_KEYS",
        None,
        "keys (`name:base64`, space-separated) one of which must sign every narinfo used",
        shown_default="the Nix configuration's `trusted-public-keys`",
        serve=True,
        builder="optional",
    )
    build_concurrency: int = setting(
        "NIXERY_BUILD_CONCURRENCY",
        4,
        "builds of different images at once (per builder instance)",
        serve=True,
        builder="optional",
    )
    lease_seconds: float = setting(
        "NIXERY_LEASE_SECONDS",
        60.0,
        "build lease, renewed while a build runs; a dead builder's lease expires after this",
        serve=True,
        builder="optional",
    )
    gcs_retry_seconds: float = setting(
        "NIXERY_GCS_RETRY_SECONDS",
        120.0,
        "how long one GCS call of the builder retries transient errors",
        function="optional",
        builder="optional",
    )
    call_deadline: float = setting(
        "NIXERY_CALL_DEADLINE",
        20.0,
        "seconds one Firestore, GCS or Google auth call may take, retries included, while the "
        "function answers a request (a dependency that does not answer: 503 after it)",
        bounds=Bounds(1, 300, "seconds"),
        function="optional",
        builder="optional",
    )
    # Access control (docs/security.md): who may pull, and the limits hostile clients meet.
    access: Literal["public", "team"] = setting(
        "NIXERY_ACCESS",
        "public",
        '`public`, or `team`: only the identities below (see "Access control")',
        serve=True,
        function="required",
    )
    team_members: str | None = setting(
        "NIXERY_TEAM_MEMBERS",
        None,
        "comma-separated e-mails admitted with a Google access token",
        serve=True,
        function="required",
    )
    team_domains: str | None = setting(
        "NIXERY_TEAM_DOMAINS",
        None,
        "comma-separated domains admitted with a Google access token (Workspace hosted "
        "domain, else the verified e-mail's)",
        serve=True,
        function="required",
    )
    team_audiences: str | None = setting(
        "NIXERY_TEAM_AUDIENCES",
        None,
        "comma-separated OAuth client ids a Google token must be issued to",
        shown_default="any",
        serve=True,
        function="required",
    )
    robot_tokens: str | None = setting(
        "NIXERY_ROBOT_TOKENS",
        None,
        "robot token hash lines from `nixery robot-token` (comma-separated)",
        serve=True,
        function="optional",
    )
    tokeninfo_url: str = setting(
        "NIXERY_TOKENINFO_URL",
        "https://oauth2.googleapis.com/tokeninfo",
        "where Google access tokens are verified",
        serve=True,
        function="optional",
    )
    platforms: str = setting(
        "NIXERY_PLATFORMS",
        "linux/amd64",
        "comma-separated platforms a tag is built for (`linux/amd64`, `linux/arm64`); with "
        "more than one, a tag answers an image index; `arm64/...` names still ask for one",
        serve=True,
        function="optional",
    )
    max_packages: int = setting(
        "NIXERY_MAX_PACKAGES",
        64,
        "path components (packages) in one image name",
        serve=True,
        function="optional",
    )
    client_build_limit: int = setting(
        "NIXERY_CLIENT_BUILD_LIMIT",
        2,
        "cold builds one client may run at once (429 beyond; per function instance)",
        serve=True,
        function="optional",
    )
    failed_build_memory: float = setting(
        "NIXERY_FAILED_BUILD_MEMORY",
        300.0,
        "seconds a failed Nix build is answered from memory (400, same message and build page) "
        "before a pull of the same image runs Nix again; `0`: every pull retries (per process "
        "or function instance)",
        # Long enough that a client's retries cost nothing; short enough that a flaky build
        # (a test that times out, a full disk while building) gets another chance soon.
        bounds=Bounds(0, 86400, "seconds, at most a day: a build can be flaky"),
        serve=True,
        function="optional",
    )
    # Passed to the package set as nixpkgs' config; the function sends them with each build.
    allow_unfree: bool = setting(
        "NIXERY_ALLOW_UNFREE",
        False,
        "`true`: build packages with unfree licences (nixpkgs' `allowUnfree`)",
        serve=True,
        function="optional",
    )
    permitted_insecure: str | None = setting(
        "NIXERY_PERMITTED_INSECURE",
        None,
        "comma-separated insecure packages to build anyway, with their versions, e.g. "
        "`openssl-1.1.1w` (nixpkgs' `permittedInsecurePackages`)",
        serve=True,
        function="optional",
    )
    # Build records (the pages' history) and log lines.
    build_records: int = setting(
        "NIXERY_BUILD_RECORDS",
        1000,
        "build records kept for the landing page and `/builds/<id>`",
        serve=True,
        function="optional",
        builder="optional",
    )
    build_record_days: float = setting(
        "NIXERY_BUILD_RECORD_DAYS",
        30.0,
        "days a build record is kept",
        serve=True,
        function="optional",
        builder="optional",
    )
    # Garbage collection (`nixery gc`, the builder's `/gc`; nixery.index.gc).
    gc_retention_days: float = setting(
        "NIXERY_GC_RETENTION_DAYS",
        30.0,
        "garbage collection deletes images not pulled by tag for this many days, then the "
        "blobs only they used",
        bounds=Bounds(
            1,
            36500,
            "a running registry re-checks an image it holds in memory once a day, so it must "
            "not be collected sooner",
        ),
        serve=True,
        builder="optional",
    )
    gc_grace_seconds: float = setting(
        "NIXERY_GC_GRACE_SECONDS",
        3600.0,
        "garbage collection never deletes a blob, manifest or upload put or used more "
        "recently: keep it above the longest build, whose blobs it protects",
        bounds=Bounds(1, 30 * 86400, "from a second to 30 days"),
        serve=True,
        builder="optional",
    )
    log_format: Literal["text", "json"] | None = setting(
        "NIXERY_LOG_FORMAT",
        None,
        "`text` (lines for a terminal) or `json` (Cloud Logging's fields)",
        shown_default="`text` for `serve`, `json` in the cloud",
        serve=True,
        function="optional",
        builder="optional",
    )

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


@dataclass(frozen=True)
class Setting:
    """One declared setting, as the rest of the code reads it."""

    name: str  # the Config field
    variable: str  # the environment variable
    kind: type  # what the text is parsed into: int, float, str or Path
    choices: tuple[str, ...]  # allowed values (from a Literal annotation), else empty
    default: object  # None when unset means "not configured"
    shown_default: str  # as help and docs show it (Markdown); empty when there is none
    help: str
    bounds: Bounds | None
    readers: Mapping[Component, Need]

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def reads(self, component: Component, *needs: Need) -> bool:
        need = self.readers.get(component)
        return need is not None and (not needs or need in needs)


def _shown(value: object) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def _declared_settings() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(Config)
    settings = []
    for declared_field in fields(Config):
        declared: _Declared = declared_field.metadata[_DECLARED]
        kind: Any = hints[declared_field.name]
        # `X | None` is an optional X: unset means "not configured".
        options = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        if type(None) in typing.get_args(kind) and len(options) == 1:
            kind = options[0]
        choices: tuple[str, ...] = ()
        if typing.get_origin(kind) is Literal:
            choices, kind = typing.get_args(kind), str
        if declared_field.default is not MISSING:
            default: object = declared_field.default
        else:
            default = None  # computed per Config; `shown_default` says what it is
        settings.append(
            Setting(
                name=declared_field.name,
                variable=declared.variable,
                kind=kind,
                choices=choices,
                default=default,
                shown_default=declared.shown_default
                if declared.shown_default is not None
                else _shown(default),
                help=declared.help,
                bounds=declared.bounds,
                readers=declared.readers,
            )
        )
    return tuple(settings)


SETTINGS: tuple[Setting, ...] = _declared_settings()
SETTING = {setting.name: setting for setting in SETTINGS}
ENVIRONMENT = {setting.name: setting.variable for setting in SETTINGS}


def _readers(component: Component, *needs: Need) -> tuple[str, ...]:
    return tuple(s.name for s in SETTINGS if s.reads(component, *needs))


# What `nixery serve` reads: its flags, and the rows of README's table.
SERVE_SETTINGS = _readers("serve")
# Which settings each cloud component reads (nixery.cloud.function, nixery.cloud.builder, nixery.build.assemble), so
# that the deployment (terraform/, builder-image/Dockerfile) can be checked to set exactly these.
# Required: the deployment must set them. Optional: read, with defaults a deployment may keep.
# "local" settings (local development only) are in neither list: the cloud never sets them.
FUNCTION_SETTINGS = _readers("function", "required")
FUNCTION_OPTIONAL_SETTINGS = _readers("function", "optional")
# The builder takes the package source from each build request, not from its settings.
BUILDER_SETTINGS = _readers("builder", "required")
BUILDER_OPTIONAL_SETTINGS = _readers("builder", "optional")


def _parse(setting: Setting, raw: str) -> object:
    label = setting.variable
    if setting.choices:
        if raw not in setting.choices:
            # The default first: "must be 'chunked', 'nixery', ...".
            ordered = sorted(setting.choices, key=lambda choice: choice != setting.default)
            quoted = [repr(choice) for choice in ordered]
            allowed = ", ".join(quoted[:-1]) + " or " + quoted[-1]
            raise ConfigError(f"{label} must be {allowed}, got {raw!r}")
        return raw
    if setting.kind in (int, float):
        try:
            number = setting.kind(raw)
        except ValueError:
            raise ConfigError(f"{label} must be a {setting.kind.__name__}, got {raw!r}") from None
        if number <= 0:
            raise ConfigError(f"{label} must be positive, got {raw!r}")
        bounds = setting.bounds
        if bounds is not None and not bounds.low <= number <= bounds.high:
            raise ConfigError(
                f"{label} must be between {bounds.low:g} and {bounds.high:g} ({bounds.why}), "
                f"got {raw!r}"
            )
        return number
    if setting.kind is Path:
        return Path(raw).expanduser().absolute()
    if setting.kind is bool:
        return _boolean(label, raw)
    return raw


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def load_config(env: Mapping[str, str], overrides: Mapping[str, str | None]) -> Config:
    """Build the config from `env`, with non-None `overrides` (command-line flags) winning."""
    values: dict[str, object] = {}
    for setting in SETTINGS:
        raw = overrides.get(setting.name)
        if raw is None:
            raw = env.get(setting.variable) or None
        if raw is not None:
            values[setting.name] = _parse(setting, raw)
    config = Config(**values)  # type: ignore[arg-type]
    _validate_together(config)
    return config


def _validate_together(config: Config) -> None:
    """The rules that involve more than one setting."""
    if config.storage_backend == "gcs" and not config.gcs_bucket:
        raise ConfigError("NIXERY_STORAGE_BACKEND=gcs needs GCS_BUCKET")
    named = [part.strip().lower() for part in config.platforms.split(",") if part.strip()]
    unknown = [name for name in named if name not in SUPPORTED_PLATFORMS]
    if not named or unknown:
        raise ConfigError(
            f"NIXERY_PLATFORMS must list platforms among {', '.join(SUPPORTED_PLATFORMS)}, "
            f"got {config.platforms!r}"
        )
    if config.source_kind == "path" and config.pkgs_path and not config.pkgs_path.exists():
        raise ConfigError(f"NIXERY_PKGS_PATH {config.pkgs_path} does not exist")


def help_text(setting: Setting) -> str:
    """A flag's `--help` line: meaning, default and environment variable."""
    shown = setting.shown_default.replace("`", "")
    default = f" (default {shown})" if shown else ""
    return f"{setting.help}{default} [env {setting.variable}]"


# Read by the platform (Cloud Run, functions-framework, Google's auth library) rather than by
# Config, listed in the cloud table beside the settings, in Markdown: (variables, default,
# readers, meaning).
PLATFORM_VARIABLES = (
    (
        "`GOOGLE_APPLICATION_CREDENTIALS`",
        "",
        "F",
        "a service-account key file: sign URLs locally; without it the runtime identity signs "
        "through IAM signBlob (needs `roles/iam.serviceAccountTokenCreator` on itself)",
    ),
    (
        "`PORT`",
        "`8080`",
        "F B",
        "set by Cloud Run / Cloud Functions; functions-framework listens on it",
    ),
    (
        "`WORKERS`, `THREADS`",
        "`1`, `4 x CPUs`",
        "F B",
        "functions-framework's gunicorn; keep one worker per builder",
    ),
)
_READER_LETTERS: tuple[tuple[Component, str], ...] = (
    ("function", "F"),
    ("builder", "B"),
    ("serve", "S"),
)


def markdown_table(table: Literal["serve", "cloud"]) -> str:
    """README.md's settings table: `serve` (with flags) or `cloud` (with who reads each)."""
    if table == "serve":
        lines = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
        for setting in SETTINGS:
            if setting.reads("serve"):
                lines.append(
                    f"| `{setting.variable}` | `{setting.flag}` | {setting.shown_default} "
                    f"| {setting.help} |"
                )
        return "\n".join(lines) + "\n"
    lines = ["| variable | default | reads | meaning |", "|---|---|---|---|"]
    for setting in SETTINGS:
        if setting.reads("function") or setting.reads("builder"):
            letters = " ".join(
                letter for component, letter in _READER_LETTERS if setting.reads(component)
            )
            lines.append(
                f"| `{setting.variable}` | {setting.shown_default} | {letters} | {setting.help} |"
            )
    for variable, default, letters, meaning in PLATFORM_VARIABLES:
        lines.append(f"| {variable} | {default} | {letters} | {meaning} |")
    return "\n".join(lines) + "\n"
