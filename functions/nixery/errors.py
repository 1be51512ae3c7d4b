"""The error table: every code a client can see, declared once with its HTTP status and message,
and the one wire form `{"errors":[{"code","message","detail"}]}`.

The codes are the OCI distribution spec's, plus four from the distribution project's errcode
registry that docker clients also know (TAG_INVALID, PAGINATION_NUMBER_INVALID, UNKNOWN and
UNAVAILABLE). Domain code never builds these: it raises its own errors, and
nixery.registry.errormap turns them into a `RegistryError` at the API edge.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

ERROR_CONTENT_TYPE = "application/json"
# The status line's reason phrase repeats the message, for the clients that read no body:
# containerd resolves a tag with HEAD (whose answer has none) and prints the status line
# (`unexpected status from HEAD request to URL: 400 <reason>`), and so do ctr and docker with
# the containerd image store; docker 20.10 prints a 5xx's status line only.
MAX_REASON_CHARS = 512


@dataclass(frozen=True)
class ErrorCode:
    code: str
    status: int
    message: str  # what the client reads when nothing more specific is said


BLOB_UNKNOWN = ErrorCode("BLOB_UNKNOWN", 404, "blob unknown to registry")
DIGEST_INVALID = ErrorCode("DIGEST_INVALID", 400, "invalid digest")
# The spec's "the manifest failed its checks"; here: the manifest the name asks for cannot be
# made, because Nix failed building it. A 4xx so that docker and podman print the message
# (`manifest invalid: <message>`), and crane and regctl do not retry what would fail again.
MANIFEST_INVALID = ErrorCode("MANIFEST_INVALID", 400, "manifest invalid")
MANIFEST_UNKNOWN = ErrorCode("MANIFEST_UNKNOWN", 404, "manifest unknown")
NAME_INVALID = ErrorCode("NAME_INVALID", 400, "invalid repository name")
NAME_UNKNOWN = ErrorCode("NAME_UNKNOWN", 404, "repository name not known to registry")
PAGINATION_NUMBER_INVALID = ErrorCode(
    "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"
)
TAG_INVALID = ErrorCode("TAG_INVALID", 400, "invalid tag")
UNAUTHORIZED = ErrorCode("UNAUTHORIZED", 401, "authentication required")
DENIED = ErrorCode("DENIED", 403, "requested access to the resource is denied")
UNSUPPORTED = ErrorCode("UNSUPPORTED", 405, "the operation is unsupported")
TOOMANYREQUESTS = ErrorCode("TOOMANYREQUESTS", 429, "too many requests")
UNKNOWN = ErrorCode("UNKNOWN", 500, "unknown error")
UNAVAILABLE = ErrorCode("UNAVAILABLE", 503, "service unavailable")

CODES: tuple[ErrorCode, ...] = (
    BLOB_UNKNOWN,
    DIGEST_INVALID,
    MANIFEST_INVALID,
    MANIFEST_UNKNOWN,
    NAME_INVALID,
    NAME_UNKNOWN,
    PAGINATION_NUMBER_INVALID,
    TAG_INVALID,
    UNAUTHORIZED,
    DENIED,
    UNSUPPORTED,
    TOOMANYREQUESTS,
    UNKNOWN,
    UNAVAILABLE,
)


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
    """An error as a client sees it: a code of the table, a message, detail and headers.

    The status is the code's, except for refusals at the HTTP layer (a request line or headers
    too large, a malformed request) where HTTP itself names the status (414, 431, 400): those
    pass `status` and carry the spec's nearest code.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        self.error_code = code
        self.code = code.code
        self.message = message or code.message
        super().__init__(self.message)
        self.detail = detail
        self.headers = headers or {}
        self.status = status or code.status

    def body(self) -> bytes:
        return ErrorBody([ErrorEntry(self.code, self.message, self.detail)]).to_json()

    def status_line(self) -> str:
        """`<status> <reason phrase>`, the reason phrase being the message."""
        return f"{self.status} {reason_phrase(self.message)}"


def reason_phrase(message: str) -> str:
    """`message` as an HTTP/1.1 reason phrase (RFC 9112 4: spaces and visible characters; here
    ASCII only, as WSGI's status must be latin-1): one line, at most MAX_REASON_CHARS, cut in
    the middle so that the end (a build page's address) stays."""
    text = "".join(char if " " <= char <= "~" else "?" for char in " ".join(message.split()))
    if len(text) > MAX_REASON_CHARS:
        keep = MAX_REASON_CHARS - len(" ... ")
        text = f"{text[: keep // 2]} ... {text[len(text) - (keep - keep // 2) :]}"
    return text or "error"


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(seconds)))}
