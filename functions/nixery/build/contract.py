"""The build contract: everything the registry side knows of the build side.

The registry front (nixery.registry, and the Cloud Function in nixery.cloud.function) imports
nothing else from nixery.build; tests/test_layout.py enforces it. Here are what a build is asked
for (`ImageRequest` at a `Revision`, keyed by `image_key`), who builds it (`Builder`), how a build
ends (an `ImageRecord` or one of the `BuildError`s), and the wire form of both for the call from
the function to the Cloud Run builder (`BuildRequest`, `BuildOutcome`), whose mapping between
outcomes and errors is written here once, both ways.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, Protocol, get_args

from nixery.index import ImageRecord, LayerSummary

log = logging.getLogger(__name__)

# A git commit, as tags, sources and the Nix expressions name one.
COMMIT_RE = re.compile(r"[0-9a-f]{40}")

# Bump when anything that shapes an image changes (layout, config, layering), so cache
# entries of the old format are not served for the new one.
# 2: per-path layering by default; 3: chunked, budget 8; 4: budget 64 and the order key
# (1 + ln popularity) x nar size / sqrt(closure paths).
BUILDER_FORMAT = 4


@dataclass(frozen=True)
class Platform:
    system: str  # Nix's name
    architecture: str  # OCI's (Go's) name
    variant: str | None = None  # OCI's, where the architecture has them
    os: str = "linux"

    @property
    def spec(self) -> str:
        """`os/architecture[/variant]`, as `docker pull --platform` and NIXERY_PLATFORMS say it."""
        parts = [self.os, self.architecture, *([self.variant] if self.variant else [])]
        return "/".join(parts)


AMD64 = Platform("x86_64-linux", "amd64")
ARM64 = Platform("aarch64-linux", "arm64", "v8")
# Every platform a tag can be built for, by the names clients use (arm64 without its variant
# too: Go's default for arm64 is v8).
PLATFORMS: dict[str, Platform] = {
    "linux/amd64": AMD64,
    "linux/arm64": ARM64,
    "linux/arm64/v8": ARM64,
}


class UnknownPlatform(ValueError):
    pass


def parse_platforms(specs: str) -> tuple[Platform, ...]:
    """`linux/amd64,linux/arm64` -> platforms, in the order given, each once."""
    chosen: list[Platform] = []
    for spec in (part.strip() for part in specs.split(",")):
        if not spec:
            continue
        platform = PLATFORMS.get(spec.lower())
        if platform is None:
            known = ", ".join(sorted(PLATFORMS))
            raise UnknownPlatform(f"unknown platform {spec!r} (known: {known})")
        if platform not in chosen:
            chosen.append(platform)
    if not chosen:
        raise UnknownPlatform("no platform named")
    return tuple(chosen)


@dataclass(frozen=True)
class PackagePolicy:
    """What the package set may give beyond its defaults: nixpkgs' `config`.

    `permitted_insecure` holds nixpkgs' `permittedInsecurePackages` entries, names with their
    versions ("openssl-1.1.1w"), as nixpkgs compares them.
    """

    allow_unfree: bool = False
    permitted_insecure: tuple[str, ...] = ()

    def nix_config(self) -> dict[str, Any]:
        """nixpkgs' config; `{}` (what it got before there was a policy) when nothing is allowed."""
        config: dict[str, Any] = {}
        if self.allow_unfree:
            config["allowUnfree"] = True
        if self.permitted_insecure:
            config["permittedInsecurePackages"] = sorted(set(self.permitted_insecure))
        return config


DEFAULT_POLICY = PackagePolicy()


@dataclass(frozen=True)
class ImageRequest:
    repository: str
    packages: tuple[str, ...]  # canonical: lowercase attribute paths, sorted, unique
    platform: Platform
    policy: PackagePolicy = DEFAULT_POLICY


@dataclass(frozen=True)
class IndexRequest:
    """One tag built for several platforms: one image each, listed by an image index."""

    repository: str
    packages: tuple[str, ...]
    platforms: tuple[Platform, ...]
    policy: PackagePolicy = DEFAULT_POLICY

    def images(self) -> tuple[ImageRequest, ...]:
        return tuple(
            ImageRequest(self.repository, self.packages, platform, self.policy)
            for platform in self.platforms
        )


@dataclass(frozen=True)
class NixSource:
    """Where the package set comes from: a local directory, a git commit or a tarball URL."""

    kind: Literal["path", "git", "tarball"]
    location: str
    rev: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("path", "git", "tarball"):
            raise ValueError(f"unknown Nix source kind {self.kind!r}")
        if self.kind == "git" and (self.rev is None or not COMMIT_RE.fullmatch(self.rev)):
            raise ValueError(f"a git source needs a 40-hex commit, not {self.rev!r}")


@dataclass(frozen=True)
class Revision:
    source_id: str
    commit: str  # a git commit, or for a path source a fingerprint of the tree
    nix_source: NixSource


def image_key(revision: Revision, request: ImageRequest) -> str:
    """The identity of an image: everything that decides its contents, hashed."""
    material = {
        "format": BUILDER_FORMAT,
        "source": revision.source_id,
        "commit": revision.commit,
        "system": request.platform.system,
        "packages": list(request.packages),
    }
    # Only where it exists, so that amd64 keys stay what they were.
    if request.platform.variant:
        material["variant"] = request.platform.variant
    # The policy decides what evaluates (and nixpkgs' config may change derivations), and
    # refusals are remembered per key, so it is part of the key; left out when it allows nothing,
    # so that the keys (and cached images) of default-policy images stay what they were.
    config = request.policy.nix_config()
    if config:
        material["config"] = config
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def index_key(revision: Revision, request: IndexRequest) -> str:
    """The identity of a multi-platform index: its images' keys, in order."""
    material = {
        "kind": "index",
        "images": [image_key(revision, image) for image in request.images()],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class BuildReport:
    """What a build tells beyond its result, for the build record: how long each phase took,
    the layers it made, whether it found the image already built. The registry makes one per
    build and passes it down; the builder fills it in (the Cloud Run builder sends it back in
    its BuildOutcome). `build_id` names the build on every log line."""

    def __init__(self, build_id: str = "") -> None:
        self.build_id = build_id
        self.phases: list[tuple[str, float]] = []  # (phase, seconds), in the order they ran
        self.layers: list[LayerSummary] = []
        self.cached = False  # the image was found built (by another request or process)

    def phase(self, name: str, seconds: float) -> None:
        self.phases.append((name, seconds))
        log.info(
            "build phase %s took %.2fs",
            name,
            seconds,
            extra={"build_id": self.build_id, "phase": name, "seconds": round(seconds, 3)},
        )


class Builder(Protocol):
    def build(
        self,
        key: str,
        request: ImageRequest,
        revision: Revision,
        report: BuildReport | None = None,
    ) -> ImageRecord:
        """The image record of the built image, or one of the BuildErrors below; `report`, if
        given, is filled in as the build goes."""
        ...

    def build_index(self, key: str, request: IndexRequest, revision: Revision) -> ImageRecord:
        """The record of an image index (its two wire forms' digests) listing one image per
        platform of `request` that built; PackagesNotFound (with `by_platform`) when none did."""
        ...


# How a build can end, as the builder service reports it.
Outcome = Literal[
    "built",
    "not_found",
    "source_unavailable",
    "nix_too_old",
    "failed",
    "timeout",
    "busy",
    "unavailable",
]

# Why a name gives no buildable derivation. "not_found": no such attribute path (or not a
# package); "unfree", "insecure", "broken", "unsupported_platform": nixpkgs' meta check refuses
# it; "removed": an alias that throws naming what replaced it; "evaluation_error": evaluating it
# throws or aborts.
RefusalReason = Literal[
    "not_found",
    "unfree",
    "insecure",
    "broken",
    "unsupported_platform",
    "removed",
    "evaluation_error",
]
REFUSAL_REASONS: tuple[str, ...] = get_args(RefusalReason)


@dataclass(frozen=True)
class Refusal:
    """One name the package set refused, and why. `message`: the removed alias's message or the
    first lines of Nix's error; `licence`, `advisories`, `platform`, `package`: the meta
    check's facts."""

    name: str
    reason: RefusalReason
    message: str = ""
    licence: str = ""
    advisories: tuple[str, ...] = ()
    platform: str = ""
    package: str = ""  # the derivation's name ("openssl-1.1.1w"), as nixpkgs' config names it

    def __post_init__(self) -> None:
        if self.reason not in REFUSAL_REASONS:
            raise ValueError(f"unknown refusal reason {self.reason!r}")

    def to_dict(self) -> dict[str, Any]:
        """The wire and `detail` form: empty facts left out."""
        data = {key: value for key, value in asdict(self).items() if value or key == "reason"}
        if self.advisories:
            data["advisories"] = list(self.advisories)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Refusal:
        return cls(
            name=str(data["name"]),
            reason=data["reason"],
            message=str(data.get("message", "")),
            licence=str(data.get("licence", "")),
            advisories=tuple(str(advisory) for advisory in data.get("advisories", ())),
            platform=str(data.get("platform", "")),
            package=str(data.get("package", "")),
        )


class BuildError(Exception):
    """A build that gave no image. `log_tail` holds the end of Nix's output, if any;
    `repository` names the image, filled in by whoever knows it."""

    outcome: ClassVar[Outcome] = "unavailable"
    # The build record that tells this failure's story, set by the registry when it has one.
    build_id: str = ""
    # Transient errors say when a retry may succeed; None: retrying cannot help.
    retry_after: float | None = None

    def __init__(self, message: str, log_tail: str = "", repository: str = "") -> None:
        super().__init__(f"{message}\n{log_tail}" if log_tail else message)
        self.message = message
        self.log_tail = log_tail
        self.repository = repository


class PackagesRefused(BuildError):
    """Names the source at this revision gives no buildable package for, each with its reason:
    the client's request (or the registry's policy), not a failure of the registry. A plain name
    stands for "not found"."""

    outcome = "not_found"

    def __init__(
        self,
        refused: Iterable[Refusal | str],
        repository: str = "",
        by_platform: dict[str, list[str]] | None = None,
    ) -> None:
        self.refusals = [
            item if isinstance(item, Refusal) else Refusal(item, "not_found") for item in refused
        ]
        self.names = [refusal.name for refusal in self.refusals]
        # For a multi-platform tag: which platform refused which names.
        self.by_platform = dict(by_platform or {})
        summary = ", ".join(f"{refusal.name} ({refusal.reason})" for refusal in self.refusals)
        super().__init__(f"refused packages: {summary}", repository=repository)


# The name of the error before it carried reasons; constructing it with names still works.
PackagesNotFound = PackagesRefused


class NixTooOld(BuildError):
    """The package source demands a newer Nix (its lib/minver.nix) than the builder runs: the
    registry is misconfigured, for every image of that revision, until Nix or the source changes."""

    outcome = "nix_too_old"

    def __init__(self, source: str, required: str, running: str, repository: str = "") -> None:
        super().__init__(
            f"the package source {source} needs Nix >= {required}; this builder runs Nix {running}",
            repository=repository,
        )
        self.source = source
        self.required = required
        self.running = running


class BuildFailed(BuildError):
    """Nix ran and failed: the image cannot be built from this source."""

    outcome: ClassVar[Outcome] = "failed"


class BuildTimedOut(BuildFailed):
    """Nix did not finish within the build's time limit."""

    outcome = "timeout"
    retry_after = 30.0


class SourceUnavailable(BuildFailed):
    """The package source could not be fetched at the revision: no such commit, or no network."""

    outcome = "source_unavailable"
    retry_after = 30.0


class BuilderBusy(BuildError):
    """Another builder holds the image's lease and has not finished in time."""

    outcome = "busy"
    retry_after = 10.0


class BuilderUnavailable(BuildError):
    """The builder (or its storage or index) failed; nothing partial is visible, so a retry
    starts clean."""

    outcome = "unavailable"

    def __init__(self, message: str, retry_after: float = 10.0, log_tail: str = "") -> None:
        super().__init__(message, log_tail)
        self.retry_after = retry_after


_ERROR_OF_OUTCOME: dict[str, type[BuildError]] = {
    error.outcome: error
    for error in (
        PackagesRefused,
        NixTooOld,
        BuildFailed,
        BuildTimedOut,
        SourceUnavailable,
        BuilderBusy,
        BuilderUnavailable,
    )
}
# The builder service's HTTP status for each outcome; the function reads the JSON body anyway.
_OUTCOME_STATUS: dict[str, int] = {
    "built": 200,
    "not_found": 404,
    "source_unavailable": 502,
    "nix_too_old": 503,
    "failed": 500,
    "timeout": 504,
    "busy": 503,
    "unavailable": 503,
}


@dataclass(frozen=True)
class BuildRequest:
    """The function's request to the builder."""

    key: str
    repository: str
    packages: tuple[str, ...]
    system: str
    architecture: str
    source_id: str
    commit: str
    nix_source: NixSource
    build_id: str = ""  # the registry's build record, for the builder's log lines
    # Set for a multi-platform index build (platform specs, in order); empty for one image.
    platforms: tuple[str, ...] = ()
    allow_unfree: bool = False
    permitted_insecure: tuple[str, ...] = ()

    @classmethod
    def of_index(cls, key: str, request: IndexRequest, revision: Revision) -> BuildRequest:
        first = request.platforms[0]
        return cls(
            key,
            request.repository,
            request.packages,
            first.system,
            first.architecture,
            revision.source_id,
            revision.commit,
            revision.nix_source,
            platforms=tuple(platform.spec for platform in request.platforms),
            allow_unfree=request.policy.allow_unfree,
            permitted_insecure=request.policy.permitted_insecure,
        )

    def index_request(self) -> IndexRequest:
        platforms = tuple(PLATFORMS[spec] for spec in self.platforms)
        policy = PackagePolicy(self.allow_unfree, self.permitted_insecure)
        return IndexRequest(self.repository, self.packages, platforms, policy)

    @classmethod
    def of(
        cls, key: str, request: ImageRequest, revision: Revision, build_id: str = ""
    ) -> BuildRequest:
        return cls(
            key,
            request.repository,
            request.packages,
            request.platform.system,
            request.platform.architecture,
            revision.source_id,
            revision.commit,
            revision.nix_source,
            build_id=build_id,
            allow_unfree=request.policy.allow_unfree,
            permitted_insecure=request.policy.permitted_insecure,
        )

    def image_request(self) -> ImageRequest:
        return ImageRequest(
            self.repository,
            self.packages,
            Platform(self.system, self.architecture),
            PackagePolicy(self.allow_unfree, self.permitted_insecure),
        )

    def revision(self) -> Revision:
        return Revision(self.source_id, self.commit, self.nix_source)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes) -> BuildRequest:
        """Parse and check a request; anything malformed raises ValueError."""
        try:
            data = json.loads(body)
            request = cls(
                key=str(data["key"]),
                repository=str(data["repository"]),
                packages=tuple(str(p) for p in data["packages"]),
                system=str(data["system"]),
                architecture=str(data["architecture"]),
                source_id=str(data["source_id"]),
                commit=str(data["commit"]),
                nix_source=NixSource(**data["nix_source"]),
                build_id=str(data.get("build_id", "")),
                platforms=tuple(str(spec) for spec in data.get("platforms", ())),
                allow_unfree=_boolean(data.get("allow_unfree", False)),
                permitted_insecure=tuple(str(name) for name in data.get("permitted_insecure", ())),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"malformed build request: {error}") from error
        unknown = [spec for spec in request.platforms if spec not in PLATFORMS]
        if unknown:
            raise ValueError(f"unknown platforms {unknown}")
        if request.platforms:
            expected = index_key(request.revision(), request.index_request())
        else:
            expected = image_key(request.revision(), request.image_request())
        if expected != request.key:
            raise ValueError("the image key does not match the request")
        return request


@dataclass(frozen=True)
class BuildOutcome:
    """The builder's answer: the image, or the error, in a form that survives JSON."""

    outcome: Outcome
    image: ImageRecord | None = None
    # Every refused name (what a reader older than `refusals` shows), and each one's reason.
    not_found: tuple[str, ...] = ()
    not_found_by_platform: dict[str, list[str]] = field(default_factory=dict)
    message: str = ""
    log: str = ""
    retry_after: float | None = None
    # The builder's BuildReport, for the registry's build record.
    phases: tuple[tuple[str, float], ...] = ()
    layers: tuple[LayerSummary, ...] = ()
    cached: bool = False
    refusals: tuple[Refusal, ...] = ()
    # nix_too_old: the source, the Nix it needs and the Nix that ran.
    nix: dict[str, str] = field(default_factory=dict)

    @classmethod
    def built(cls, image: ImageRecord, report: BuildReport | None = None) -> BuildOutcome:
        return cls("built", image=image, **_report_fields(report))

    @classmethod
    def of_error(cls, error: BuildError, report: BuildReport | None = None) -> BuildOutcome:
        refusals = tuple(error.refusals) if isinstance(error, PackagesRefused) else ()
        by_platform = error.by_platform if isinstance(error, PackagesRefused) else {}
        nix = (
            {"source": error.source, "required": error.required, "running": error.running}
            if isinstance(error, NixTooOld)
            else {}
        )
        return cls(
            error.outcome,
            not_found=tuple(refusal.name for refusal in refusals),
            not_found_by_platform=by_platform,
            message=error.message,
            log=error.log_tail,
            retry_after=error.retry_after,
            refusals=refusals,
            nix=nix,
            **_report_fields(report),
        )

    def fill(self, report: BuildReport | None) -> None:
        """Copy what the builder reported into the caller's `report`."""
        if report is None:
            return
        report.phases.extend(self.phases)  # logged by the builder already
        report.layers.extend(self.layers)
        report.cached = report.cached or self.cached

    def result(self) -> ImageRecord:
        """The image, or the error this outcome stands for, raised."""
        if self.outcome == "built" and self.image is not None:
            return self.image
        kind = _ERROR_OF_OUTCOME.get(self.outcome, BuilderUnavailable)
        if kind is PackagesRefused:
            raise PackagesRefused(
                self.refusals or self.not_found, by_platform=self.not_found_by_platform
            )
        if kind is NixTooOld:
            raise NixTooOld(
                self.nix.get("source", "?"),
                self.nix.get("required", "?"),
                self.nix.get("running", "?"),
            )
        if kind is BuilderUnavailable:
            raise BuilderUnavailable(
                self.message or "the builder failed", self.retry_after or 10.0, self.log
            )
        raise kind(self.message, self.log)

    @property
    def http_status(self) -> int:
        return _OUTCOME_STATUS[self.outcome]

    def to_json(self) -> bytes:
        data = asdict(self)
        data["refusals"] = [refusal.to_dict() for refusal in self.refusals]
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes) -> BuildOutcome:
        """Parse an answer; anything malformed raises ValueError."""
        try:
            data: dict[str, Any] = json.loads(body)
            image = data.get("image")
            outcome = data["outcome"]
            if outcome not in _OUTCOME_STATUS:
                raise ValueError(f"unknown outcome {outcome!r}")
            retry = data.get("retry_after")
            return cls(
                outcome=outcome,
                image=ImageRecord(**image) if image else None,
                not_found=tuple(str(name) for name in data.get("not_found", ())),
                not_found_by_platform={
                    str(spec): [str(name) for name in names]
                    for spec, names in data.get("not_found_by_platform", {}).items()
                },
                message=str(data.get("message", "")),
                log=str(data.get("log", "")),
                retry_after=float(retry) if retry is not None else None,
                phases=tuple(
                    (str(name), float(seconds)) for name, seconds in data.get("phases", ())
                ),
                layers=tuple(
                    LayerSummary(str(layer["digest"]), int(layer["size"]), tuple(layer["paths"]))
                    for layer in data.get("layers", ())
                ),
                cached=bool(data.get("cached", False)),
                refusals=tuple(Refusal.from_dict(item) for item in data.get("refusals", ())),
                nix={str(key): str(value) for key, value in data.get("nix", {}).items()},
            )
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"malformed build outcome: {error}") from error


def _report_fields(report: BuildReport | None) -> dict[str, Any]:
    if report is None:
        return {}
    return {"phases": tuple(report.phases), "layers": tuple(report.layers), "cached": report.cached}


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, not {value!r}")
    return value
