"""HTTP details of blobs and manifests (issue 13): Content-Length on GET, the same headers on
HEAD and GET, Range per RFC 9110, If-None-Match."""

from __future__ import annotations

import http.client

import pytest
import requests

from tests.e2e.registry_process import RegistryProcess

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SAME = ("Content-Length", "Content-Type", "ETag", "Docker-Content-Digest", "Accept-Ranges")


@pytest.fixture(scope="module")
def layer(registry: RegistryProcess) -> tuple[str, int]:
    response = requests.get(
        f"{registry.url}/v2/shell/hello/manifests/latest",
        headers={"Accept": OCI_MANIFEST},
        timeout=600,
    )
    response.raise_for_status()
    largest = max(response.json()["layers"], key=lambda entry: entry["size"])
    return f"{registry.url}/v2/shell/hello/blobs/{largest['digest']}", largest["size"]


def test_blob_get_has_content_length_and_the_headers_of_head(
    registry: RegistryProcess, layer: tuple[str, int]
) -> None:
    url, size = layer
    path = url.removeprefix(registry.url)
    connection = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=60)
    connection.request("GET", path)
    got = connection.getresponse()
    body = got.read()
    connection.close()
    assert got.getheader("Content-Length") == str(size)
    assert got.getheader("Transfer-Encoding") is None
    assert len(body) == size
    head = requests.head(url, timeout=60)
    for name in SAME:
        assert head.headers.get(name) == got.getheader(name), name


def test_manifest_head_and_get_headers_match(registry: RegistryProcess) -> None:
    url = f"{registry.url}/v2/shell/hello/manifests/latest"
    get = requests.get(url, headers={"Accept": OCI_MANIFEST}, timeout=600)
    head = requests.head(url, headers={"Accept": OCI_MANIFEST}, timeout=60)
    for name in ("Content-Length", "Content-Type", "ETag", "Docker-Content-Digest"):
        assert head.headers.get(name) == get.headers.get(name), name


@pytest.mark.parametrize(
    "header", ["bytes=oops", "items=0-10", "bytes=0-1,5-6", "bytes=10-5", "garbage"]
)
def test_unparseable_or_multiple_ranges_are_ignored(layer: tuple[str, int], header: str) -> None:
    url, size = layer
    response = requests.get(url, headers={"Range": header}, timeout=60)
    assert response.status_code == 200
    assert len(response.content) == size


def test_single_ranges(layer: tuple[str, int]) -> None:
    url, size = layer
    whole = requests.get(url, timeout=60).content
    suffix = requests.get(url, headers={"Range": "bytes=-5"}, timeout=60)
    assert suffix.status_code == 206 and suffix.content == whole[-5:]
    assert suffix.headers["Content-Range"] == f"bytes {size - 5}-{size - 1}/{size}"
    tail = requests.get(url, headers={"Range": f"bytes={size - 3}-"}, timeout=60)
    assert tail.status_code == 206 and tail.content == whole[-3:]
    past = requests.get(url, headers={"Range": f"bytes={size}-"}, timeout=60)
    assert past.status_code == 416
    assert past.headers["Content-Range"] == f"bytes */{size}"


def test_if_none_match_is_a_304(registry: RegistryProcess, layer: tuple[str, int]) -> None:
    url, _ = layer
    etag = requests.head(url, timeout=60).headers["ETag"]
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=60).status_code == 304
    manifest_url = f"{registry.url}/v2/shell/hello/manifests/latest"
    first = requests.get(manifest_url, headers={"Accept": OCI_MANIFEST}, timeout=60)
    again = requests.get(
        manifest_url,
        headers={"Accept": OCI_MANIFEST, "If-None-Match": first.headers["ETag"]},
        timeout=60,
    )
    assert again.status_code == 304 and again.content == b""
    other = requests.get(
        manifest_url, headers={"Accept": OCI_MANIFEST, "If-None-Match": '"sha256:0"'}, timeout=60
    )
    assert other.status_code == 200
