"""An independent check of GCS V4 signed URLs (the emulator does not verify signatures)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SERVICE_ACCOUNT = "registry@nixery-test.iam.gserviceaccount.com"


class UrlRejected(Exception):
    pass


def verify_v4_url(
    url: str,
    public_key: rsa.RSAPublicKey,
    *,
    now: datetime,
    method: str = "GET",
    email: str = SERVICE_ACCOUNT,
) -> None:
    """Check a V4 signed URL as GCS would; raise UrlRejected with the reason."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True))
    if params.get("X-Goog-Algorithm") != "GOOG4-RSA-SHA256":
        raise UrlRejected("algorithm")
    signed_headers = params["X-Goog-SignedHeaders"]
    if signed_headers != "host":
        raise UrlRejected(f"unexpected signed headers {signed_headers}")
    credential_email, _, scope = params["X-Goog-Credential"].partition("/")
    request_time = params["X-Goog-Date"]
    if credential_email != email or not scope.startswith(request_time[:8] + "/"):
        raise UrlRejected("credential")
    if not scope.endswith("/auto/storage/goog4_request"):
        raise UrlRejected("scope")

    canonical_query = "&".join(
        f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
        for name, value in sorted(params.items())
        if name != "X-Goog-Signature"
    )
    canonical_request = "\n".join(
        [
            method,
            quote(unquote(parts.path), safe="/-_.~"),
            canonical_query,
            f"host:{parts.netloc}",
            "",
            signed_headers,
            "UNSIGNED-PAYLOAD",
        ]
    )
    string_to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            request_time,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    try:
        public_key.verify(
            bytes.fromhex(params["X-Goog-Signature"]),
            string_to_sign.encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (InvalidSignature, ValueError) as error:
        raise UrlRejected("signature") from error

    signed_at = datetime.strptime(request_time, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if now < signed_at - timedelta(minutes=1):
        raise UrlRejected("not yet valid")
    if now > signed_at + timedelta(seconds=int(params["X-Goog-Expires"])):
        raise UrlRejected("expired")


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    params.update(changes)
    return urlunsplit(parts._replace(query=urlencode(params)))
