"""Hostile input, generated: no 5xx, no escaping exception, no path outside the storage root,
and no Nix evaluation of a name the grammar rejects.

Derandomized (a fixed seed) with a bounded number of examples, so CI runs the same cases each
time; `pytest.mark.timeout` is the time budget of each property.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder, run_wsgi_app

from nixery.auth.access import AccessError, parse_basic
from nixery.oci import DIGEST_RE, InvalidDigest
from nixery.registry.errormap import as_registry_error
from nixery.registry.names import (
    REPOSITORY_RE,
    TAG_RE,
    InvalidName,
    InvalidTag,
    parse_image_name,
    validate_tag,
)
from nixery.registry.negotiation import prefers_docker
from nixery.storage.filesystem import FilesystemStorage
from tests.fuzz.conftest import MAX_PACKAGES, FuzzRegistry
from tests.team import ROBOT, basic

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=250,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
BUDGET = pytest.mark.timeout(240)

# What a Nix attribute path may look like once a name has been parsed: no quotes, no `${`,
# no spaces or slashes, nothing that could be more than data.
ATTRIBUTE_RE = re.compile(r"[a-z0-9_][a-z0-9_.-]*")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ABSENT = "sha256:" + "0" * 64

# Characters a path, header or name can carry over the wire (WSGI strings are latin-1).
WIRE = st.characters(min_codepoint=0, max_codepoint=255)
HOSTILE = st.sampled_from(list("AZ./%:_-~ \x00\n\r\t\\?#;\x7f\xe9\xff$\"'{}`"))
SEGMENTS = [
    "v2",
    "hello",
    "nosuchpackage",
    "shell",
    "arm64",
    "manifests",
    "blobs",
    "tags",
    "list",
    "uploads",
    "latest",
    ABSENT,
    "sha256:..",
    "..",
    ".",
    "",
    "%2e%2e",
    "%2F",
    "etc",
    "passwd",
    "index.sqlite",
    '${builtins.abort "x"}',
    "--help",
    "a" * 300,
]
SEGMENT = st.one_of(st.sampled_from(SEGMENTS), st.text(HOSTILE, max_size=12))
# Names that may well be valid, so that some requests do reach Nix (arm64 is left out: this
# machine cannot build for it, a 500 that is no parsing failure).
MANIFEST_PATHS = st.tuples(
    st.one_of(
        st.lists(st.sampled_from(["hello", "nosuchpackage", "emptydir", "shell"]), min_size=1),
        st.lists(
            st.sampled_from(["hello", "nosuchpackage", "shell", "Hello", "..", "a-", "x" * 200]),
            min_size=1,
            max_size=MAX_PACKAGES + 2,
        ),
    ),
    st.sampled_from(["latest", "-x", "a" * 129, ABSENT, "v1", "..", ""]),
).map(lambda parts: f"/v2/{'/'.join(parts[0])}/manifests/{parts[1]}")
PATHS = st.one_of(
    MANIFEST_PATHS,
    st.lists(SEGMENT, max_size=8).map(lambda parts: "/" + "/".join(parts)),
    st.lists(SEGMENT, max_size=6).map(lambda parts: "/v2/" + "/".join(parts)),
    st.text(WIRE, max_size=80),
)
METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])


def call(
    registry: FuzzRegistry, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request as a WSGI server hands it over: the raw path, the raw header values."""
    environ = EnvironBuilder(method=method, path="/").get_environ()
    environ["PATH_INFO"] = path
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    body, status, response_headers = run_wsgi_app(registry.app.wsgi_app, environ, buffered=True)
    return int(status.split()[0]), dict(response_headers), b"".join(body)


def assert_sane(status: int, headers: dict[str, str], body: bytes, method: str) -> None:
    assert status < 500, body
    if status >= 400:
        assert headers["Content-Type"] == "application/json"
        if method != "HEAD":
            error = json.loads(body)["errors"][0]
            assert isinstance(error["code"], str) and error["code"]


def assert_builds_only_valid_names(registry: FuzzRegistry, since: int, nix_before: int) -> None:
    reached = registry.builder.requests[since:]
    for request in reached:
        assert REPOSITORY_RE.fullmatch(request.repository)
        assert len(request.repository.split("/")) <= MAX_PACKAGES
        assert all(ATTRIBUTE_RE.fullmatch(package) for package in request.packages)
    if not reached:
        assert registry.nix_calls() == nix_before, "Nix ran for a request that built nothing"


@BUDGET
@FUZZ
@given(method=st.one_of(st.just("GET"), METHODS), path=PATHS)
def test_router(public_registry: FuzzRegistry, method: str, path: str) -> None:
    since, nix_before = len(public_registry.builder.requests), public_registry.nix_calls()
    status, headers, body = call(public_registry, method, path)
    event(f"status {status}")
    event("reached the builder" if len(public_registry.builder.requests) > since else "no build")
    assert_sane(status, headers, body, method)
    assert_builds_only_valid_names(public_registry, since, nix_before)


@FUZZ
@given(name=st.one_of(st.text(WIRE, max_size=300), st.lists(SEGMENT, max_size=12).map("/".join)))
def test_name_parsing(name: str) -> None:
    try:
        image = parse_image_name(name, MAX_PACKAGES)
    except InvalidName as invalid:
        error = as_registry_error(invalid)
        assert error.status == 400 and error.code == "NAME_INVALID"
        return
    assert REPOSITORY_RE.fullmatch(name) and len(name) <= 255
    assert len(name.split("/")) <= MAX_PACKAGES
    assert all(ATTRIBUTE_RE.fullmatch(package) for package in image.packages)


@FUZZ
@given(name=st.from_regex(REPOSITORY_RE, fullmatch=True))
def test_names_of_the_grammar_parse(name: str) -> None:
    if len(name) > 255 or len(name.split("/")) > MAX_PACKAGES:
        with pytest.raises(InvalidName):
            parse_image_name(name, MAX_PACKAGES)
    else:
        assert parse_image_name(name, MAX_PACKAGES).repository == name


@FUZZ
@given(tag=st.one_of(st.text(WIRE, max_size=140), st.from_regex(TAG_RE, fullmatch=True)))
def test_tag_parsing(tag: str) -> None:
    try:
        validate_tag(tag)
    except InvalidTag as invalid:
        error = as_registry_error(invalid)
        assert error.status == 400 and error.code == "TAG_INVALID"
        return
    # An accepted tag is never an option (git, Nix) and never a path.
    assert not tag.startswith("-") and "/" not in tag and 0 < len(tag) <= 128
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", tag)


@FUZZ
@given(
    digest=st.one_of(
        st.text(WIRE, max_size=80),
        st.text(
            st.sampled_from(list("0123456789abcdefABCDEF./\x00:")), min_size=60, max_size=70
        ).map(lambda hex_part: "sha256:" + hex_part),
    )
)
def test_digest_parsing_never_names_a_path_outside_storage(
    public_registry: FuzzRegistry, digest: str
) -> None:
    storage = public_registry.service.storage
    assert isinstance(storage, FilesystemStorage)
    try:
        path = storage.blob_path(digest)
    except InvalidDigest:
        assert not DIGEST_RE.fullmatch(digest)
        return
    assert path.parent == storage.blob_dir and path.resolve().is_relative_to(storage.blob_dir)


@pytest.fixture(scope="module")
def warm_image(public_registry: FuzzRegistry) -> dict[str, Any]:
    """`hello`, built for real once: its manifest and one of its layers."""
    status, _, body = call(public_registry, "GET", "/v2/hello/manifests/latest")
    assert status == 200, body
    manifest = json.loads(body)
    layer = manifest["layers"][-1]["digest"]
    status, _, blob = call(public_registry, "GET", f"/v2/hello/blobs/{layer}")
    assert status == 200
    return {"layer": layer, "blob": blob}


MEDIA_TYPES = st.sampled_from(
    [OCI_MANIFEST, DOCKER_MANIFEST, "application/vnd.oci.image.index.v1+json", "*/*", "text/html"]
)
ACCEPT = st.one_of(
    st.text(WIRE, max_size=200),
    st.lists(
        st.tuples(MEDIA_TYPES, st.text(HOSTILE, max_size=6)).map(lambda t: f"{t[0]};q={t[1]}"),
        max_size=6,
    ).map(", ".join),
)


@BUDGET
@FUZZ
@given(accept=ACCEPT)
def test_accept_header(
    public_registry: FuzzRegistry, warm_image: dict[str, Any], accept: str
) -> None:
    since, nix_before = len(public_registry.builder.requests), public_registry.nix_calls()
    status, headers, body = call(
        public_registry, "GET", "/v2/hello/manifests/latest", {"Accept": accept}
    )
    assert status == 200
    assert headers["Content-Type"] == (DOCKER_MANIFEST if prefers_docker(accept) else OCI_MANIFEST)
    assert headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(body).hexdigest()
    assert public_registry.builder.requests[since:] == []
    assert public_registry.nix_calls() == nix_before


NUMBER = st.one_of(st.none(), st.integers(min_value=0, max_value=1 << 40), st.just(-1))
RANGE_SPEC = st.tuples(NUMBER, NUMBER).map(
    lambda pair: f"{'' if pair[0] is None else pair[0]}-{'' if pair[1] is None else pair[1]}"
)
RANGE = st.one_of(
    st.text(WIRE, max_size=60),
    st.lists(RANGE_SPEC, min_size=1, max_size=3).map(lambda specs: "bytes=" + ",".join(specs)),
)


@BUDGET
@FUZZ
@given(range_header=RANGE)
def test_range_header(
    public_registry: FuzzRegistry, warm_image: dict[str, Any], range_header: str
) -> None:
    blob: bytes = warm_image["blob"]
    status, headers, body = call(
        public_registry, "GET", f"/v2/hello/blobs/{warm_image['layer']}", {"Range": range_header}
    )
    assert status in (200, 206, 416), body
    event(f"status {status}")
    if status == 200:
        assert body == blob
    elif status == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", headers["Content-Range"])
        assert match, headers
        start, end, total = map(int, match.groups())
        assert total == len(blob) and body == blob[start : end + 1]
    else:
        assert headers["Content-Type"] == "application/json"


AUTHORIZATION = st.one_of(
    st.text(WIRE, max_size=120),
    st.tuples(
        st.one_of(st.sampled_from(["oauth2accesstoken", ROBOT, ""]), st.text(WIRE, max_size=20)),
        st.text(st.characters(), max_size=60),
    ).map(lambda pair: basic(*pair)),
    st.text(WIRE, max_size=40).map(lambda value: "Basic " + value),
)


@BUDGET
@FUZZ
@given(authorization=AUTHORIZATION, path=st.sampled_from(["/v2/", "/v2/hello/manifests/latest"]))
def test_auth_header(team_registry: FuzzRegistry, authorization: str, path: str) -> None:
    nix_before = team_registry.nix_calls()
    status, headers, body = call(team_registry, "GET", path, {"Authorization": authorization})
    assert status == 401, body
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert headers["WWW-Authenticate"].startswith("Basic realm=")
    assert team_registry.builder.requests == []
    assert team_registry.nix_calls() == nix_before


@FUZZ
@given(authorization=st.text(WIRE, max_size=200))
def test_basic_parsing_only_raises_401(authorization: str) -> None:
    try:
        username, password = parse_basic(authorization)
    except AccessError as refused:
        assert as_registry_error(refused).status == 401
        return
    assert username and password
