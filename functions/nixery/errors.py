"""Registry errors and their one wire form: `{"errors":[{"code","message","detail"}]}`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

ERROR_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class ErrorEntry:
    code: str
    message: str
    detail: Any = None


@dataclass(frozen=True)
class ErrorBody:
    errors: list[ErrorEntry] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()


class RegistryError(Exception):
    """An error a client sees, with the HTTP status it travels with."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> bytes:
        return ErrorBody([ErrorEntry(self.code, self.message, self.detail)]).to_json()


def name_invalid(name: str, why: str) -> RegistryError:
    return RegistryError(
        400, "NAME_INVALID", "invalid repository name", {"name": name, "reason": why}
    )


def tag_invalid(tag: str) -> RegistryError:
    return RegistryError(400, "TAG_INVALID", "invalid tag", {"tag": tag})


def pagination_number_invalid(value: str) -> RegistryError:
    return RegistryError(
        400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested", {"n": value}
    )


def digest_invalid(digest: str) -> RegistryError:
    return RegistryError(400, "DIGEST_INVALID", "invalid digest", {"digest": digest})


def manifest_unknown(reference: str, detail: Any = None) -> RegistryError:
    return RegistryError(404, "MANIFEST_UNKNOWN", f"manifest unknown: {reference}", detail)


def packages_unknown(names: list[str]) -> RegistryError:
    return RegistryError(
        404,
        "MANIFEST_UNKNOWN",
        "unknown packages: " + ", ".join(names),
        {"packages": names},
    )


def blob_unknown(digest: str) -> RegistryError:
    return RegistryError(404, "BLOB_UNKNOWN", "blob unknown to registry", {"digest": digest})


def unsupported(method: str, path: str) -> RegistryError:
    return RegistryError(
        405,
        "UNSUPPORTED",
        "this registry is read-only: images are built from Nix packages named in the path",
        {"method": method, "path": path},
    )


def not_found(path: str) -> RegistryError:
    return RegistryError(404, "NOT_FOUND", "no such endpoint", {"path": path})


def build_failed(message: str, log_tail: str) -> RegistryError:
    return RegistryError(500, "UNKNOWN", message, {"log": log_tail})


def unavailable(message: str, retry_after: int) -> RegistryError:
    return RegistryError(
        503, "UNAVAILABLE", message, None, headers={"Retry-After": str(retry_after)}
    )


def unauthorized(reason: str, realm: str) -> RegistryError:
    """401 with the Basic challenge that makes docker, podman and skopeo send credentials."""
    return RegistryError(
        401,
        "UNAUTHORIZED",
        "authentication required",
        {"reason": reason},
        headers={"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'},
    )


def denied(identity: str, reason: str) -> RegistryError:
    return RegistryError(
        403,
        "DENIED",
        "requested access to the resource is denied",
        {"identity": identity, "reason": reason},
    )


def too_many_requests(message: str, limit: int, retry_after: int) -> RegistryError:
    return RegistryError(
        429,
        "TOOMANYREQUESTS",
        message,
        {"limit": limit},
        headers={"Retry-After": str(retry_after)},
    )


def too_many_packages(name: str, count: int, limit: int) -> RegistryError:
    return RegistryError(
        400,
        "NAME_INVALID",
        f"too many packages in one image ({count}, the limit is {limit})",
        {"name": name, "packages": count, "limit": limit},
    )


def headers_too_large(size: int, limit: int) -> RegistryError:
    return RegistryError(
        431,
        "HEADERS_TOO_LARGE",
        f"request headers of {size} bytes exceed the limit of {limit}",
        {"size": size, "limit": limit},
    )


def uri_too_long(size: int, limit: int) -> RegistryError:
    return RegistryError(
        414,
        "URI_TOO_LONG",
        f"a request path of {size} bytes exceeds the limit of {limit}",
        {"size": size, "limit": limit},
    )
