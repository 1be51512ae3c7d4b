"""The builder's HTTP handler: one POSTed build request in, one build outcome out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from flask import Request, Response

from nixery.build.coordinator import Builder
from nixery.build.nix import NixError, SourceUnavailable
from nixery.cloud.idtoken import InvalidToken
from nixery.cloud.remote import BuildOutcome, BuildRequest
from nixery.errors import ERROR_CONTENT_TYPE, RegistryError
from nixery.registry.imagekey import PackagesNotFound

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str) -> Response:
    return Response(
        RegistryError(status, code, message).body(), status=status, content_type=ERROR_CONTENT_TYPE
    )


class BuildService:
    def __init__(
        self,
        builder: Builder,
        verify_token: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> None:
        self.builder = builder
        self.verify_token = verify_token

    def handle(self, request: Request) -> Response:
        if request.method != "POST":
            return _error(405, "UNSUPPORTED", "POST a build request")
        if self.verify_token is not None:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return _error(401, "UNAUTHORIZED", "an ID token is required")
            try:
                self.verify_token(token)
            except InvalidToken as error:
                return _error(403, "DENIED", f"invalid ID token: {error}")
        try:
            build = BuildRequest.from_json(request.get_data())
        except ValueError as error:
            return _error(400, "BAD_REQUEST", str(error))
        outcome = self._run(build)
        return Response(
            outcome.to_json(), status=outcome.http_status, content_type="application/json"
        )

    def _run(self, build: BuildRequest) -> BuildOutcome:
        try:
            image = self.builder.build(build.key, build.image_request(), build.revision())
        except PackagesNotFound as missing:
            return BuildOutcome("not_found", not_found=tuple(missing.names))
        except SourceUnavailable as error:
            return BuildOutcome("source_unavailable", message=str(error), log=error.log_tail)
        except NixError as error:
            return BuildOutcome("failed", message=str(error).splitlines()[0], log=error.log_tail)
        except RegistryError as error:
            return BuildOutcome("busy", message=error.message)
        except Exception as error:
            # Storage or index trouble: nothing partial is visible, so a retry starts clean.
            log.exception("build of %s failed", build.repository)
            return BuildOutcome("error", message=f"the build failed ({error}); retry")
        return BuildOutcome("built", image=image)
