"""Who may pull: public access, or a team admitted by Google identity or robot token.

One check (`Access.authenticate`) runs before any routing, in `nixery serve` and in the Cloud
Function alike, so a request without credentials never reaches a manifest, a blob or a redirect.
docs/security.md describes the threat model and how credentials flow.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import http.client
import json
import logging
import math
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from nixery.config import Config, ConfigError
from nixery.util.lru import Lru
from nixery.util.singleflight import SingleFlight

log = logging.getLogger(__name__)

REALM = "nixery"
# The usernames that come with a Google access token as the password: `oauth2accesstoken` in
# `docker login` by hand, `_dcgcloud_token` from docker-credential-gcloud (what `gcloud auth
# configure-docker` installs) and docker-credential-gcr, `_token` in older GCR instructions.
GOOGLE_USERNAME = "oauth2accesstoken"
GOOGLE_USERNAMES = frozenset({GOOGLE_USERNAME, "_dcgcloud_token", "_token"})
MAX_AUTHORIZATION_BYTES = 8192
VERDICT_MEMORY = 4096
# A token Google rejected is remembered this long, so a client retrying garbage costs one call.
REJECTED_SECONDS = 30.0
# A verdict is never kept longer than this, whatever expiry the token claims.
LONGEST_VERDICT_SECONDS = 3600.0
TOKENINFO_TIMEOUT = 10.0

# OAuth access tokens are URL-safe text; anything else is refused without asking Google.
ACCESS_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{1,4096}")
ROBOT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# name:scrypt$N$r$p$salt$hash, salt and hash unpadded urlsafe base64.
_ROBOT_LINE_RE = re.compile(
    r"(?P<name>[^:\s,]+):scrypt\$(?P<n>\d+)\$(?P<r>\d+)\$(?P<p>\d+)"
    r"\$(?P<salt>[A-Za-z0-9_-]+)\$(?P<hash>[A-Za-z0-9_-]+)"
)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
# One check at a time: on a small machine a second concurrent scrypt takes the core that
# verified requests need (measured with 50 bad logins: good requests' p99 67 ms with two at
# once, 25 ms with one, for the same refusal rate; BENCHMARKS.md "Credential floods"). Waiting
# checks are not refused early: a fast 503 lets a flood retry at once and costs more CPU than
# the queue (measured: p99 298 ms with at most 16 waiting).
SCRYPT_AT_ONCE = 1


@dataclass(frozen=True)
class Identity:
    kind: Literal["anonymous", "google", "robot"]
    name: str  # the e-mail, the robot's name, or empty for anonymous


ANONYMOUS = Identity("anonymous", "")


class Access(Protocol):
    def authenticate(self, authorization: str | None) -> Identity:
        """The caller's identity, or an AccessError."""
        ...


class PublicAccess:
    def authenticate(self, authorization: str | None) -> Identity:
        return ANONYMOUS


class AccessError(Exception):
    """Why a request is not admitted; nixery.registry.errormap gives each its HTTP answer."""


class Unauthenticated(AccessError):
    """No credentials, or credentials that prove nothing: a 401 with the Basic challenge."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Forbidden(AccessError):
    """A known identity that is not on the team."""

    def __init__(self, identity: str, reason: str) -> None:
        super().__init__(f"{identity}: {reason}")
        self.identity = identity
        self.reason = reason


class VerifierUnavailable(AccessError):
    """The verifier could not be asked; not the client's fault, so not a 401."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def unauthorized(reason: str) -> Unauthenticated:
    return Unauthenticated(reason)


def parse_basic(authorization: str | None) -> tuple[str, str]:
    """(username, password) of an HTTP Basic header; anything else is a 401."""
    if not authorization:
        raise unauthorized("no credentials")
    if len(authorization) > MAX_AUTHORIZATION_BYTES:
        raise unauthorized("Authorization header too long")
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise unauthorized("only HTTP Basic credentials are accepted")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise unauthorized("malformed Basic credentials") from None
    username, colon, password = decoded.partition(":")
    if not colon or not username or not password:
        raise unauthorized("malformed Basic credentials")
    return username, password


def _token_key(*parts: str) -> str:
    """Caches are keyed by a hash, so no token stays in memory longer than its request."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class _Verdict:
    identity: Identity | None
    error: AccessError | None
    until: float  # clock time after which the verdict must be re-established


class _VerdictCache:
    """Bounded (least recently used goes first), each entry expiring at its own time.

    Admissions and refusals are bounded apart: anyone can mint refusals by sending garbage, and
    they must not push the team's admissions out (each would then cost a tokeninfo call or a
    scrypt again)."""

    def __init__(self, size: int, clock: Callable[[], float]) -> None:
        self.admitted: Lru[str, _Verdict] = Lru(size, clock=clock)
        self.refused: Lru[str, _Verdict] = Lru(size, clock=clock)

    def get(self, key: str) -> _Verdict | None:
        # A key is in at most one of the two (put removes it from the other).
        return self.admitted.get(key) or self.refused.get(key)

    def put(self, key: str, verdict: _Verdict) -> None:
        if verdict.error is None:
            self.refused.pop(key)
            self.admitted.put(key, verdict, expires_at=verdict.until)
        else:
            self.admitted.pop(key)
            self.refused.put(key, verdict, expires_at=verdict.until)

    def __len__(self) -> int:
        return len(self.admitted) + len(self.refused)


class TokenInfoUnavailable(Exception):
    """The verifier could not be asked; not the client's fault, so not a 401."""


def fetch_tokeninfo(url: str, token: str) -> Mapping[str, object] | None:
    """Google's answer for an access token, or None when Google says the token is invalid."""
    query = urllib.parse.urlencode({"access_token": token})
    try:
        with urllib.request.urlopen(f"{url}?{query}", timeout=TOKENINFO_TIMEOUT) as response:
            answer = json.loads(response.read(65536))
    except urllib.error.HTTPError as error:
        if error.code == 400:  # tokeninfo's "invalid_token"
            return None
        raise TokenInfoUnavailable(f"tokeninfo answered {error.code}") from None
    except (OSError, ValueError, http.client.HTTPException, RecursionError) as error:
        # ValueError covers bad JSON; HTTPException a broken status line from a proxy.
        raise TokenInfoUnavailable(f"tokeninfo unreachable: {error!r}") from None
    if not isinstance(answer, dict):
        raise TokenInfoUnavailable("tokeninfo answered something other than a JSON object")
    return answer


def _split_list(raw: str | None) -> frozenset[str]:
    return frozenset(item.strip().lower() for item in (raw or "").split(",") if item.strip())


class GoogleTokens:
    """Google OAuth access tokens, checked with tokeninfo and admitted by e-mail or domain."""

    def __init__(
        self,
        tokeninfo_url: str,
        members: frozenset[str],
        domains: frozenset[str],
        audiences: frozenset[str] = frozenset(),
        fetch: Callable[[str, str], Mapping[str, object] | None] = fetch_tokeninfo,
        clock: Callable[[], float] = time.time,
        memory: int = VERDICT_MEMORY,
    ) -> None:
        self.tokeninfo_url = tokeninfo_url
        self.members = members
        self.domains = domains
        self.audiences = audiences
        self._fetch = fetch
        self._clock = clock
        self._cache = _VerdictCache(memory, clock)
        self._flights: SingleFlight[_Verdict] = SingleFlight()

    def verify(self, token: str) -> Identity:
        if not ACCESS_TOKEN_RE.fullmatch(token):
            raise unauthorized("not an OAuth access token")
        key = _token_key("google", token)
        verdict = self._cache.get(key)
        if verdict is None:
            # The layers of one pull arrive together: one tokeninfo call serves them all.
            verdict = self._flights.run(key, lambda: self._establish(key, token))
        if verdict.error is not None:
            raise verdict.error
        assert verdict.identity is not None
        return verdict.identity

    def _establish(self, key: str, token: str) -> _Verdict:
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            answer = self._fetch(self.tokeninfo_url, token)
        except TokenInfoUnavailable as error:
            log.warning("cannot verify a Google token: %s", error)
            # The verifier's address and the error's text stay in the log.
            raise VerifierUnavailable("cannot verify the Google token now", retry_after=5) from None
        now = self._clock()
        verdict = self._judge(answer, now)
        self._cache.put(key, verdict)
        return verdict

    def _judge(self, answer: Mapping[str, object] | None, now: float) -> _Verdict:
        rejected_until = now + REJECTED_SECONDS
        if answer is None:
            return _Verdict(None, unauthorized("Google rejected the access token"), rejected_until)
        try:
            expiry = float(str(answer.get("exp", "")))
        except ValueError:
            return _Verdict(None, unauthorized("token answer has no expiry"), rejected_until)
        if not math.isfinite(expiry):
            return _Verdict(None, unauthorized("token answer has no expiry"), rejected_until)
        if expiry <= now:
            return _Verdict(None, unauthorized("the access token has expired"), rejected_until)
        until = min(expiry, now + LONGEST_VERDICT_SECONDS)
        audience = str(answer.get("aud", ""))
        if self.audiences and audience.lower() not in self.audiences:
            return _Verdict(
                None, unauthorized("the access token was issued to another client"), until
            )
        email = str(answer.get("email", "")).lower()
        if not email or str(answer.get("email_verified", "")).lower() != "true":
            return _Verdict(None, Forbidden(email, "the token carries no verified e-mail"), until)
        # A Workspace account's hosted domain is Google's word; otherwise the verified e-mail's.
        domain = str(answer.get("hd") or email.rpartition("@")[2]).lower()
        if email in self.members or domain in self.domains:
            return _Verdict(Identity("google", email), None, until)
        return _Verdict(None, Forbidden(email, "not a member of this registry's team"), until)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class RobotHash:
    name: str
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def matches(self, token: str) -> bool:
        derived = _scrypt(token, self.salt, self.n, self.r, self.p, len(self.digest))
        return hmac.compare_digest(derived, self.digest)

    def line(self) -> str:
        return (
            f"{self.name}:scrypt${self.n}${self.r}${self.p}${_b64(self.salt)}${_b64(self.digest)}"
        )


def _scrypt(token: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        token.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=length
    )


def hash_robot_token(name: str, token: str, salt: bytes | None = None) -> RobotHash:
    if not ROBOT_NAME_RE.fullmatch(name) or name == GOOGLE_USERNAME:
        raise ConfigError(f"robot name {name!r} must match {ROBOT_NAME_RE.pattern}")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = _scrypt(token, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, 32)
    return RobotHash(name, SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, digest)


def new_robot_token() -> str:
    return secrets.token_urlsafe(32)


def parse_robot_hashes(raw: str | None) -> dict[str, RobotHash]:
    """NIXERY_ROBOT_TOKENS: hash lines separated by commas or whitespace."""
    robots: dict[str, RobotHash] = {}
    for entry in re.split(r"[,\s]+", raw or ""):
        if not entry:
            continue
        match = _ROBOT_LINE_RE.fullmatch(entry)
        if match is None:
            raise ConfigError(
                "NIXERY_ROBOT_TOKENS entries are `name:scrypt$N$r$p$salt$hash` "
                "(from `nixery robot-token NAME`)"
            )
        name = match["name"]
        if not ROBOT_NAME_RE.fullmatch(name) or name == GOOGLE_USERNAME or name in robots:
            raise ConfigError(f"NIXERY_ROBOT_TOKENS: bad or repeated robot name {name!r}")
        n, r, p = int(match["n"]), int(match["r"]), int(match["p"])
        # scrypt needs about 128 * r * n bytes (more with p): beyond maxmem every check would fail.
        if (
            n < 2
            or n & (n - 1)
            or not 1 <= r <= 32
            or not 1 <= p <= 16
            or 128 * r * n * (p + 1) > _SCRYPT_MAXMEM
        ):
            raise ConfigError(f"NIXERY_ROBOT_TOKENS: scrypt parameters of {name!r} out of range")
        try:
            salt, digest = _unb64(match["salt"]), _unb64(match["hash"])
        except (binascii.Error, ValueError):
            raise ConfigError(f"NIXERY_ROBOT_TOKENS: bad base64 in the line of {name!r}") from None
        if len(salt) < 16 or len(digest) != 32:
            raise ConfigError(
                f"NIXERY_ROBOT_TOKENS: the line of {name!r} needs a salt of at least 16 bytes "
                "and a 32-byte hash"
            )
        robots[name] = RobotHash(name, n, r, p, salt, digest)
    return robots


class RobotTokens:
    """Static CI tokens, held only as salted scrypt hashes, compared in constant time."""

    def __init__(
        self,
        hashes: Mapping[str, RobotHash],
        clock: Callable[[], float] = time.monotonic,
        memory: int = VERDICT_MEMORY,
    ) -> None:
        self._hashes = dict(hashes)
        # An unknown name costs the same scrypt as a known one.
        self._decoy = hash_robot_token("decoy", new_robot_token())
        self._cache = _VerdictCache(memory, clock)
        self._clock = clock
        self._flights: SingleFlight[_Verdict] = SingleFlight()
        # Each scrypt holds 16 MiB for about 50 ms: a burst of junk credentials must queue here,
        # not multiply the instance's memory.
        self._scrypt_slots = threading.BoundedSemaphore(SCRYPT_AT_ONCE)

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def verify(self, name: str, token: str) -> Identity:
        if not self._hashes:
            raise unauthorized("this registry admits no robot tokens")
        # scrypt is slow on purpose; a pull sends the same token with every request.
        key = _token_key("robot", name, token)
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = self._flights.run(key, lambda: self._establish(key, name, token))
        if verdict.error is not None:
            raise verdict.error
        assert verdict.identity is not None
        return verdict.identity

    def _establish(self, key: str, name: str, token: str) -> _Verdict:
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        stored = self._hashes.get(name)
        with self._scrypt_slots:
            matched = (stored or self._decoy).matches(token) and stored is not None
        if matched:
            verdict = _Verdict(
                Identity("robot", name), None, self._clock() + LONGEST_VERDICT_SECONDS
            )
        else:
            error = unauthorized("unknown robot or wrong token")
            verdict = _Verdict(None, error, self._clock() + REJECTED_SECONDS)
        self._cache.put(key, verdict)
        return verdict


class TeamAccess:
    """Basic credentials: a Google username (GOOGLE_USERNAMES) + an access token, or robot name +
    token."""

    def __init__(self, google: GoogleTokens | None, robots: RobotTokens) -> None:
        self.google = google
        self.robots = robots

    def authenticate(self, authorization: str | None) -> Identity:
        username, password = parse_basic(authorization)
        if username in GOOGLE_USERNAMES:
            if self.google is None:
                raise unauthorized("this registry admits no Google identities")
            return self.google.verify(password)
        return self.robots.verify(username, password)


def access_from_config(config: Config) -> Access:
    """The configured access mode; a team nobody could join is a start-up error."""
    if config.access == "public":
        return PublicAccess()
    members = _split_list(config.team_members)
    domains = _split_list(config.team_domains)
    audiences = _split_list(config.team_audiences)
    robots = RobotTokens(parse_robot_hashes(config.robot_tokens))
    if not (members or domains or robots):
        raise ConfigError(
            "NIXERY_ACCESS=team needs NIXERY_TEAM_MEMBERS, NIXERY_TEAM_DOMAINS "
            "or NIXERY_ROBOT_TOKENS"
        )
    if urllib.parse.urlsplit(config.tokeninfo_url).scheme not in ("http", "https"):
        raise ConfigError(f"NIXERY_TOKENINFO_URL must be an http(s) URL: {config.tokeninfo_url!r}")
    google = None
    if members or domains:
        google = GoogleTokens(config.tokeninfo_url, members, domains, audiences)
    return TeamAccess(google, robots)
