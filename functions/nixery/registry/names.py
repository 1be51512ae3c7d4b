"""Image names -> package lists, with Nixery's rules (image names stay compatible)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from nixery.config import Config
from nixery.errors import name_invalid, tag_invalid, too_many_packages

# The OCI distribution spec's grammar for repository names and tags.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
MAX_REPOSITORY_LENGTH = 255
DEFAULT_MAX_PACKAGES = Config.max_packages  # NIXERY_MAX_PACKAGES, declared in nixery.config

ALWAYS_ADDED = ("cacert", "iana-etc")
SHELL_PACKAGES = ("bashInteractive", "coreutils", "moreutils", "nano")


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


def validate_repository(repository: str) -> None:
    if len(repository) > MAX_REPOSITORY_LENGTH:
        raise name_invalid(repository, f"longer than {MAX_REPOSITORY_LENGTH} characters")
    if not REPOSITORY_RE.fullmatch(repository):
        raise name_invalid(repository, "does not match the OCI repository name grammar")


def validate_tag(tag: str) -> None:
    if not TAG_RE.fullmatch(tag):
        raise tag_invalid(tag)


def canonical_attribute(name: str) -> str:
    """Lowercase (resolution is case-insensitive), and `_`-prefix components starting with a digit."""
    parts = name.lower().split(".")
    return ".".join("_" + part if part[:1].isdigit() else part for part in parts)


def parse_image_name(repository: str, max_packages: int = DEFAULT_MAX_PACKAGES) -> ImageRequest:
    """The package list of a name; `max_packages` bounds the path components a client may name."""
    validate_repository(repository)
    components = repository.split("/")
    if len(components) > max_packages:
        raise too_many_packages(repository, len(components), max_packages)
    platform = AMD64
    wanted: list[str] = []
    meta_done = False
    for component in components:
        if not meta_done and component == "shell":
            wanted.extend(SHELL_PACKAGES)
        elif not meta_done and component == "arm64":
            platform = ARM64
        else:
            meta_done = True
            wanted.append(component)
    wanted.extend(ALWAYS_ADDED)
    packages = tuple(sorted({canonical_attribute(name) for name in wanted}))
    return ImageRequest(repository, packages, platform)
