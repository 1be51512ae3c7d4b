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
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal, Protocol

from nixery.index import ImageRecord, LayerSummary

log = logging.getLogger(__name__)

# A git commit, as tags, sources and the Nix expressions name one.
COMMIT_RE = re.compile(r"[0-9a-f]{40}")

# Bump when anything that shapes an image changes (layout, config, layering), so cache
# entries of the old format are not served for the new one.
BUILDER_FORMAT = 2  # 2: per-path layering by default


@dataclass(frozen=True)
class Platform:
    system: str  # Nix's name
    architecture: str  # OCI's name


AMD64 = Platform("x86_64-linux", "amd64")
ARM64 = Platform("aarch64-linux", "arm64")


@dataclass(frozen=True)
class ImageRequest:
    repository: str
    packages: tuple[str, ...]  # canonical: lowercase attribute paths, sorted, unique
    platform: Platform


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


# How a build can end, as the builder service reports it.
Outcome = Literal[
    "built", "not_found", "source_unavailable", "failed", "timeout", "busy", "unavailable"
]


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


class PackagesNotFound(BuildError):
    """Names that are not packages of the source at this revision: the client's mistake."""

    outcome = "not_found"

    def __init__(self, names: tuple[str, ...] | list[str], repository: str = "") -> None:
        super().__init__(", ".join(names), repository=repository)
        self.names = list(names)


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
        PackagesNotFound,
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
            build_id,
        )

    def image_request(self) -> ImageRequest:
        return ImageRequest(
            self.repository, self.packages, Platform(self.system, self.architecture)
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
            )
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"malformed build request: {error}") from error
        if image_key(request.revision(), request.image_request()) != request.key:
            raise ValueError("the image key does not match the request")
        return request


@dataclass(frozen=True)
class BuildOutcome:
    """The builder's answer: the image, or the error, in a form that survives JSON."""

    outcome: Outcome
    image: ImageRecord | None = None
    not_found: tuple[str, ...] = ()
    message: str = ""
    log: str = ""
    retry_after: float | None = None
    # The builder's BuildReport, for the registry's build record.
    phases: tuple[tuple[str, float], ...] = ()
    layers: tuple[LayerSummary, ...] = ()
    cached: bool = False

    @classmethod
    def built(cls, image: ImageRecord, report: BuildReport | None = None) -> BuildOutcome:
        return cls("built", image=image, **_report_fields(report))

    @classmethod
    def of_error(cls, error: BuildError, report: BuildReport | None = None) -> BuildOutcome:
        names = tuple(error.names) if isinstance(error, PackagesNotFound) else ()
        return cls(
            error.outcome,
            not_found=names,
            message=error.message,
            log=error.log_tail,
            retry_after=error.retry_after,
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
        if kind is PackagesNotFound:
            raise PackagesNotFound(self.not_found)
        if kind is BuilderUnavailable:
            raise BuilderUnavailable(
                self.message or "the builder failed", self.retry_after or 10.0, self.log
            )
        raise kind(self.message, self.log)

    @property
    def http_status(self) -> int:
        return _OUTCOME_STATUS[self.outcome]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

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
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
            raise ValueError(f"malformed build outcome: {error}") from error


def _report_fields(report: BuildReport | None) -> dict[str, Any]:
    if report is None:
        return {}
    return {"phases": tuple(report.phases), "layers": tuple(report.layers), "cached": report.cached}
