"""Image names -> package lists, with Nixery's rules (image names stay compatible)."""

from __future__ import annotations

import re

from nixery.build.contract import AMD64, ARM64, ImageRequest
from nixery.config import Config

# The OCI distribution spec's grammar for repository names and tags.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
MAX_REPOSITORY_LENGTH = 255
DEFAULT_MAX_PACKAGES = Config.max_packages  # NIXERY_MAX_PACKAGES, declared in nixery.config

ALWAYS_ADDED = ("cacert", "iana-etc")
SHELL_PACKAGES = ("bashInteractive", "coreutils", "moreutils", "nano")


class InvalidName(ValueError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"invalid repository name {name!r}: {reason}")
        self.name = name
        self.reason = reason


class TooManyPackages(InvalidName):
    def __init__(self, name: str, count: int, limit: int) -> None:
        super().__init__(name, f"too many packages in one image ({count}, the limit is {limit})")
        self.count = count
        self.limit = limit


class InvalidTag(ValueError):
    def __init__(self, tag: str) -> None:
        super().__init__(f"invalid tag {tag!r}")
        self.tag = tag


def validate_repository(repository: str) -> None:
    if len(repository) > MAX_REPOSITORY_LENGTH:
        raise InvalidName(repository, f"longer than {MAX_REPOSITORY_LENGTH} characters")
    if not REPOSITORY_RE.fullmatch(repository):
        raise InvalidName(repository, "does not match the OCI repository name grammar")


def validate_tag(tag: str) -> None:
    if not TAG_RE.fullmatch(tag):
        raise InvalidTag(tag)


def canonical_attribute(name: str) -> str:
    """Lowercase (resolution is case-insensitive), and `_`-prefix components starting with a digit."""
    parts = name.lower().split(".")
    return ".".join("_" + part if part[:1].isdigit() else part for part in parts)


def parse_image_name(repository: str, max_packages: int = DEFAULT_MAX_PACKAGES) -> ImageRequest:
    """The package list of a name; `max_packages` bounds the path components a client may name."""
    validate_repository(repository)
    components = repository.split("/")
    if len(components) > max_packages:
        raise TooManyPackages(repository, len(components), max_packages)
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
