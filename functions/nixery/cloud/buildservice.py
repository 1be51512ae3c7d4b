"""The builder's HTTP handler: one POSTed build request in, one build outcome out; and `/gc`,
where Cloud Scheduler starts garbage collection (nixery.index.gc) on the same authentication."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from flask import Request, Response

from nixery import errors
from nixery.build.contract import (
    Builder,
    BuildError,
    BuilderUnavailable,
    BuildOutcome,
    BuildReport,
    BuildRequest,
)
from nixery.cloud.idtoken import InvalidToken
from nixery.errors import ERROR_CONTENT_TYPE, ErrorCode, RegistryError
from nixery.index.gc import GcReport
from nixery.util.logs import log_context

log = logging.getLogger(__name__)

GC_PATH = "/gc"
_TRUE = {"1", "true", "yes"}


def _error(code: ErrorCode, message: str, status: int | None = None) -> Response:
    error = RegistryError(code, message, status=status)
    return Response(error.body(), status=error.status, content_type=ERROR_CONTENT_TYPE)


class BuildService:
    def __init__(
        self,
        builder: Builder,
        verify_token: Callable[[str], Mapping[str, Any]] | None = None,
        collect_garbage: Callable[[bool], GcReport] | None = None,
    ) -> None:
        """`collect_garbage(dry_run)`: what `/gc` runs; without it `/gc` is not found."""
        self.builder = builder
        self.verify_token = verify_token
        self.collect_garbage = collect_garbage
        # One collection at a time per instance; a second request meanwhile is told so.
        self._collecting = threading.Lock()

    def handle(self, request: Request) -> Response:
        if request.method != "POST":
            return _error(errors.UNSUPPORTED, "POST a build request")
        if self.verify_token is not None:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return _error(errors.UNAUTHORIZED, "an ID token is required")
            try:
                self.verify_token(token)
            except InvalidToken as error:
                return _error(errors.DENIED, f"invalid ID token: {error}")
        if request.path.rstrip("/") == GC_PATH:
            return self._gc(request)
        try:
            build = BuildRequest.from_json(request.get_data())
        except ValueError as error:
            return _error(errors.UNSUPPORTED, str(error), status=400)
        outcome = self._run(build)
        return Response(
            outcome.to_json(), status=outcome.http_status, content_type="application/json"
        )

    def _gc(self, request: Request) -> Response:
        """`POST /gc[?dry_run=true]`: one collection; its totals as JSON."""
        if self.collect_garbage is None:
            return _error(errors.NAME_UNKNOWN, "garbage collection is not configured", 404)
        dry_run = request.args.get("dry_run", "").lower() in _TRUE
        if not self._collecting.acquire(blocking=False):
            return _error(errors.TOOMANYREQUESTS, "garbage collection is already running", 429)
        try:
            report = self.collect_garbage(dry_run)
        except Exception as error:
            log.exception("garbage collection failed")
            return _error(errors.UNAVAILABLE, f"garbage collection failed ({error}); retry", 503)
        finally:
            self._collecting.release()
        return Response(json.dumps(report.to_dict()), content_type="application/json")

    def _run(self, build: BuildRequest) -> BuildOutcome:
        report = BuildReport(build.build_id)
        with log_context(build_id=build.build_id or None):
            try:
                if build.platforms:
                    image = self.builder.build_index(
                        build.key, build.index_request(), build.revision()
                    )
                else:
                    image = self.builder.build(
                        build.key, build.image_request(), build.revision(), report
                    )
                return BuildOutcome.built(image, report)
            except BuildError as error:
                return BuildOutcome.of_error(error, report)
            except Exception as error:
                # Storage or index trouble: nothing partial is visible, so a retry starts clean.
                # The exception's text (addresses, paths) is for the log, which the build id
                # the client is shown finds.
                log.exception("build of %s failed: %s", build.repository, type(error).__name__)
                reference = f" (build {build.build_id})" if build.build_id else ""
                unavailable = BuilderUnavailable(
                    f"the builder could not finish the build{reference}; retry"
                )
                return BuildOutcome.of_error(unavailable, report)
