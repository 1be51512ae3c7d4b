"""Google ID tokens between the registry function and the private builder service.

In production the function fetches tokens from the metadata server (audience = the builder's
URL) and Cloud Run's IAM checks them; the builder may verify them too. Locally (the dev stack,
the tests) tokens are minted and verified with a service-account key generated on the spot.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import google.auth.crypt
import google.auth.jwt
import google.auth.transport.requests
import google.oauth2.id_token

from nixery.cloud.deadlines import DeadlineRequest
from nixery.util.lru import Lru

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
TOKEN_LIFETIME = 3600
# Fetch a new token this long before the cached one expires.
REFRESH_MARGIN = 300


class InvalidToken(Exception):
    pass


class CachedTokenSource:
    """Caches tokens from `fetch` until shortly before their `exp`."""

    def __init__(self, fetch: Callable[[], str], clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch
        # One audience per source: one token. `clock` is wall time, as `exp` is.
        self._token: Lru[str, str] = Lru(1, clock=clock)
        # Held while fetching: callers arriving meanwhile wait for that token.
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            token = self._token.get("token")
            if token is None:
                token = self._fetch()
                claims = google.auth.jwt.decode(token, verify=False)
                expires_at = float(claims["exp"]) - REFRESH_MARGIN
                self._token.put("token", token, expires_at=expires_at)
            return token


def metadata_token_source(audience: str, deadline: float) -> CachedTokenSource:
    """Production: the runtime service account's ID tokens for `audience`, each fetch within
    `deadline` seconds."""
    request = DeadlineRequest(deadline)
    return CachedTokenSource(lambda: google.oauth2.id_token.fetch_id_token(request, audience))


def key_file_token_source(key_file: Path, audience: str) -> CachedTokenSource:
    """Local: ID-token-shaped JWTs signed by a service-account key file."""
    info = json.loads(key_file.read_text())
    signer = google.auth.crypt.RSASigner.from_service_account_info(info)

    def mint() -> str:
        now = int(time.time())
        claims = {
            "iss": info["client_email"],
            "sub": info["client_email"],
            "email": info["client_email"],
            "aud": audience,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
        }
        return google.auth.jwt.encode(signer, claims).decode()

    return CachedTokenSource(mint)


def public_keys_of(key_file: Path) -> dict[str, str]:
    """{key id: public key PEM} of a service-account key file, for a local verifier."""
    # Only the builder uses this: the registry function's runtime does not need cryptography.
    from cryptography.hazmat.primitives import serialization

    info = json.loads(key_file.read_text())
    private_key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {info["private_key_id"]: public.decode()}


class IdTokenVerifier:
    """Checks signature, expiry and audience; `certs` (key id -> PEM) replaces Google's."""

    def __init__(self, audience: str, certs: Mapping[str, str] | None = None) -> None:
        self.audience = audience
        self.certs = dict(certs) if certs is not None else None
        self._request = google.auth.transport.requests.Request()

    def __call__(self, token: str) -> Mapping[str, Any]:
        try:
            if self.certs is not None:
                return google.auth.jwt.decode(token, certs=self.certs, audience=self.audience)
            return google.oauth2.id_token.verify_token(
                token, self._request, audience=self.audience, certs_url=GOOGLE_CERTS_URL
            )
        except (ValueError, google.auth.exceptions.GoogleAuthError) as error:
            raise InvalidToken(str(error)) from error
