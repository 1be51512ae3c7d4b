"""Deadlines for the Google calls the cloud side makes while a client waits.

Every GCS and Firestore call has one (`NIXERY_CALL_DEADLINE`, passed to nixery.storage.gcs and
nixery.index.firestore); so do the google-auth calls (the metadata server's ID tokens, IAM
signBlob for URL signing), whose transport otherwise waits up to 120 s per call.
"""

from __future__ import annotations

from typing import Any

import google.auth.transport.requests

# google-auth's own default per HTTP call, far beyond what a waiting client should see.
GOOGLE_AUTH_DEFAULT_TIMEOUT = 120


class DeadlineRequest(google.auth.transport.requests.Request):
    """google-auth's HTTP transport with every call bounded by `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __call__(self, url: str, method: str = "GET", *args: Any, **kwargs: Any) -> Any:
        timeout = kwargs.get("timeout", GOOGLE_AUTH_DEFAULT_TIMEOUT)
        kwargs["timeout"] = min(float(timeout or self.seconds), self.seconds)
        return super().__call__(url, method, *args, **kwargs)  # type: ignore[no-untyped-call]
