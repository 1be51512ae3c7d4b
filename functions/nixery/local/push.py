"""Pushing a built image to any registry with the distribution API's standard flow: for each
blob a HEAD (already there?), else a POST that first asks to mount it (`?mount=`), else a
monolithic upload (POST, then PUT with the digest); then each platform's manifest by digest
and the tag's manifest (an index, for several platforms) last. Credentials come from flags or
the docker client's config (`auths`, `credHelpers`, `credsStore`); Basic and Bearer token
challenges are both answered."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlencode, urljoin

import requests

from nixery.local.exported import BlobRef, ExportedImage

OpenBlob = Callable[[str], BinaryIO]
Progress = Callable[[int, int], None]
TIMEOUT = (10, 600)
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


class PushFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Destination:
    """`docker://HOST/REPO:TAG`, parsed."""

    host: str
    repository: str
    tag: str

    @classmethod
    def parse(cls, reference: str) -> Destination:
        host, slash, rest = reference.partition("/")
        if not slash or not rest:
            raise ValueError(f"{reference!r} is not HOST/REPOSITORY[:TAG]")
        repository, colon, tag = rest.rpartition(":")
        if not colon or "/" in tag:
            repository, tag = rest, "latest"
        return cls(host, repository, tag)

    @property
    def plain_http(self) -> bool:
        """Loopback registries speak plain HTTP, as docker assumes too."""
        name = self.host.rsplit(":", 1)[0] if not self.host.startswith("[") else self.host
        return name in ("localhost", "[::1]") or name.startswith("127.")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def docker_config_credentials(host: str, config_dir: Path | None = None) -> Credentials | None:
    """The docker client's stored login for `host`: a credential helper, or `auths`."""
    directory = config_dir or Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    helper = config.get("credHelpers", {}).get(host) or config.get("credsStore")
    if helper:
        try:
            answer = subprocess.run(
                [f"docker-credential-{helper}", "get"],
                input=host,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            secret = json.loads(answer.stdout)
            return Credentials(secret["Username"], secret["Secret"])
        except (OSError, subprocess.SubprocessError, ValueError, KeyError):
            pass  # the helper does not know this host: fall back to `auths`
    entry = config.get("auths", {}).get(host) or config.get("auths", {}).get(f"https://{host}")
    if entry and entry.get("auth"):
        username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        return Credentials(username, password)
    return None


class RegistryClient:
    """The push side of the distribution API for one repository."""

    def __init__(
        self,
        destination: Destination,
        credentials: Credentials | None,
        session: requests.Session | None = None,
    ) -> None:
        self.destination = destination
        self.credentials = credentials
        self.session = session or requests.Session()
        scheme = "http" if destination.plain_http else "https"
        self.base = f"{scheme}://{destination.host}/v2/{destination.repository}"
        self._authorization: str | None = None

    def _request(
        self,
        method: str,
        url: str,
        data: bytes | BinaryIO | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """One request, answering an authentication challenge once (a streamed body is
        rewound for the second try)."""
        for attempt in range(2):
            sent = dict(headers or {})
            if self._authorization:
                sent["Authorization"] = self._authorization
            if attempt and data is not None and not isinstance(data, bytes):
                data.seek(0)
            response = self.session.request(method, url, data=data, headers=sent, timeout=TIMEOUT)
            if response.status_code != 401 or attempt:
                return response
            self._authorization = self._answer(response.headers.get("WWW-Authenticate", ""))
            if self._authorization is None:
                return response
        raise AssertionError("unreachable")

    def _answer(self, challenge: str) -> str | None:
        scheme, _, parameters = challenge.partition(" ")
        fields = dict(_CHALLENGE_RE.findall(parameters))
        basic = None
        if self.credentials is not None:
            pair = f"{self.credentials.username}:{self.credentials.password}".encode()
            basic = "Basic " + base64.b64encode(pair).decode()
        if scheme.lower() == "basic":
            return basic
        if scheme.lower() == "bearer" and "realm" in fields:
            scope = f"repository:{self.destination.repository}:pull,push"
            query = urlencode({"service": fields.get("service", ""), "scope": scope})
            headers = {"Authorization": basic} if basic else {}
            answer = self.session.get(
                f"{fields['realm']}?{query}", headers=headers, timeout=TIMEOUT
            )
            if answer.status_code != 200:
                raise PushFailed(f"the token service refused: HTTP {answer.status_code}")
            token = answer.json()
            return "Bearer " + str(token.get("token") or token.get("access_token"))
        return None

    def _check(self, response: requests.Response, *expected: int) -> requests.Response:
        if response.status_code not in expected:
            raise PushFailed(
                f"{response.request.method} {response.url}: HTTP {response.status_code} "
                f"{response.text[:500]}"
            )
        return response

    def has_blob(self, digest: str) -> bool:
        return self._request("HEAD", f"{self.base}/blobs/{digest}").status_code == 200

    def push_blob(self, blob: BlobRef, open_blob: OpenBlob) -> str:
        """'present', 'mounted' or 'uploaded'."""
        if self.has_blob(blob.digest):
            return "present"
        started = self._check(
            self._request(
                "POST", f"{self.base}/blobs/uploads/?{urlencode({'mount': blob.digest})}"
            ),
            201,
            202,
        )
        if started.status_code == 201:
            return "mounted"
        location = urljoin(self.base + "/", started.headers["Location"])
        separator = "&" if "?" in location else "?"
        with open_blob(blob.digest) as data:
            self._check(
                self._request(
                    "PUT",
                    f"{location}{separator}{urlencode({'digest': blob.digest})}",
                    data=data,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(blob.size),
                    },
                ),
                201,
            )
        return "uploaded"

    def put_manifest(self, reference: str, media_type: str, body: bytes) -> str:
        response = self._check(
            self._request(
                "PUT",
                f"{self.base}/manifests/{reference}",
                data=body,
                headers={"Content-Type": media_type},
            ),
            201,
        )
        return response.headers.get("Docker-Content-Digest", "")


def push_image(
    image: ExportedImage,
    client: RegistryClient,
    open_blob: OpenBlob,
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Pushes every blob, each platform's manifest, then the tag; the tag's digest."""
    blobs = image.blobs()
    for done, blob in enumerate(blobs, 1):
        client.push_blob(blob, open_blob)
        if progress is not None:
            progress(done, len(blobs))
    if image.is_index:
        for platform_image in image.images:
            manifest = platform_image.manifest
            client.put_manifest(manifest.digest, manifest.media_type, manifest.body)
    top = image.top
    pushed = client.put_manifest(client.destination.tag, top.media_type, top.body)
    if pushed and pushed != top.digest:
        raise PushFailed(f"the registry stored the tag as {pushed}, not {top.digest}")
    return top.digest
