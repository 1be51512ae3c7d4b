"""The registry function's Builder: the build call to the Cloud Run builder service.

The request and the answer are the build contract's wire forms (nixery.build.contract); every
answer becomes the image or the contract's error for it, as if the function had built the image
itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import requests

from nixery.build.contract import (
    BuilderUnavailable,
    BuildOutcome,
    BuildReport,
    BuildRequest,
    ImageRequest,
    IndexRequest,
    Revision,
)
from nixery.index import ImageRecord

log = logging.getLogger(__name__)


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

    def build(
        self,
        key: str,
        request: ImageRequest,
        revision: Revision,
        report: BuildReport | None = None,
    ) -> ImageRecord:
        build_id = report.build_id if report is not None else ""
        return self._call(
            BuildRequest.of(key, request, revision, build_id), request.repository, report
        )

    def build_index(self, key: str, request: IndexRequest, revision: Revision) -> ImageRecord:
        return self._call(BuildRequest.of_index(key, request, revision), request.repository)

    def _call(
        self, build: BuildRequest, repository: str, report: BuildReport | None = None
    ) -> ImageRecord:
        headers = {"Content-Type": "application/json"}
        if self.token_source is not None:
            try:
                headers["Authorization"] = f"Bearer {self.token_source()}"
            except Exception as error:
                # The metadata server (within the call deadline); its text is for the log.
                log.warning("no ID token for the builder: %s", error)
                raise BuilderUnavailable("cannot authenticate to the builder now") from None
        body = build.to_json()
        try:
            response = self.session.post(
                self.url, data=body, headers=headers, timeout=(10, self.timeout)
            )
        except requests.Timeout:
            raise BuilderUnavailable(
                f"the builder did not finish {repository} within {self.timeout:.0f}s; "
                "the build goes on, retry shortly",
                retry_after=30,
            ) from None
        except requests.RequestException as error:
            log.warning("builder unreachable: %s", error)
            raise BuilderUnavailable("the builder is unreachable") from None
        try:
            outcome = BuildOutcome.from_json(response.content)
        except ValueError:
            log.warning("builder answered %s: %.500r", response.status_code, response.content)
            raise BuilderUnavailable(f"the builder answered HTTP {response.status_code}") from None
        outcome.fill(report)
        return outcome.result()
