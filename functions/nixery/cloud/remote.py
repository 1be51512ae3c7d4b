"""The build call between the registry front (a Cloud Function) and the builder (Cloud Run).

The wire format is a pair of typed dataclasses with one serialiser each; the client maps every
outcome to what the registry would have raised had it built the image itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import requests

from nixery import errors
from nixery.build.nix import NixError, NixSource, SourceUnavailable
from nixery.index import ImageRecord
from nixery.registry.imagekey import PackagesNotFound, image_key
from nixery.registry.names import ImageRequest, Platform
from nixery.registry.sources import Revision

log = logging.getLogger(__name__)

# failed: Nix failed (the client's image cannot build); busy/error: try again later.
Outcome = Literal["built", "not_found", "source_unavailable", "failed", "busy", "error"]
_OUTCOME_STATUS: dict[str, int] = {
    "built": 200,
    "not_found": 404,
    "source_unavailable": 502,
    "failed": 500,
    "busy": 503,
    "error": 503,
}


@dataclass(frozen=True)
class BuildRequest:
    key: str
    repository: str
    packages: tuple[str, ...]
    system: str
    architecture: str
    source_id: str
    commit: str
    nix_source: NixSource

    @classmethod
    def of(cls, key: str, request: ImageRequest, revision: Revision) -> BuildRequest:
        return cls(
            key,
            request.repository,
            request.packages,
            request.platform.system,
            request.platform.architecture,
            revision.source_id,
            revision.commit,
            revision.nix_source,
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
            )
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"malformed build request: {error}") from error
        if image_key(request.revision(), request.image_request()) != request.key:
            raise ValueError("the image key does not match the request")
        return request


@dataclass(frozen=True)
class BuildOutcome:
    outcome: Outcome
    image: ImageRecord | None = None
    not_found: tuple[str, ...] = ()
    message: str = ""
    log: str = ""

    @property
    def http_status(self) -> int:
        return _OUTCOME_STATUS[self.outcome]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes) -> BuildOutcome:
        data: dict[str, Any] = json.loads(body)
        image = data.get("image")
        return cls(
            outcome=data["outcome"],
            image=ImageRecord(**image) if image else None,
            not_found=tuple(data.get("not_found", ())),
            message=str(data.get("message", "")),
            log=str(data.get("log", "")),
        )


class RemoteBuilder:
    """A Builder that asks the builder service, authenticating with an ID token."""

    def __init__(
        self,
        url: str,
        token_source: Callable[[], str] | None,
        timeout: float,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url
        self.token_source = token_source
        self.timeout = timeout
        self.session = session or requests.Session()

    def build(self, key: str, request: ImageRequest, revision: Revision) -> ImageRecord:
        headers = {"Content-Type": "application/json"}
        if self.token_source is not None:
            headers["Authorization"] = f"Bearer {self.token_source()}"
        body = BuildRequest.of(key, request, revision).to_json()
        try:
            response = self.session.post(
                self.url, data=body, headers=headers, timeout=(10, self.timeout)
            )
        except requests.Timeout:
            raise errors.unavailable(
                f"the builder did not finish {request.repository} within {self.timeout:.0f}s; "
                "the build goes on, retry shortly",
                retry_after=30,
            ) from None
        except requests.RequestException as error:
            log.warning("builder unreachable: %s", error)
            raise errors.unavailable("the builder is unreachable", retry_after=10) from None
        try:
            outcome = BuildOutcome.from_json(response.content)
        except (ValueError, KeyError, TypeError):
            log.warning("builder answered %s: %.500r", response.status_code, response.content)
            raise errors.unavailable(
                f"the builder answered HTTP {response.status_code}", retry_after=10
            ) from None
        if outcome.outcome == "built" and outcome.image is not None:
            return outcome.image
        if outcome.outcome == "not_found":
            raise PackagesNotFound(outcome.not_found)
        if outcome.outcome == "source_unavailable":
            raise SourceUnavailable(outcome.message, outcome.log)
        if outcome.outcome == "failed":
            raise NixError(outcome.message, outcome.log)
        raise errors.unavailable(outcome.message or "the builder is busy", retry_after=10)
