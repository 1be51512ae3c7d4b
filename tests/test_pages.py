"""The pages at / and /builds/<id>, their JSON forms and their headers, through the registry's
WSGI app over a real SQLite index (tests/e2e/test_pages.py loads them in a real browser after
real builds); the JSON log lines; the CLI's progress bar."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import struct
import termios
from collections.abc import Iterator
from pathlib import Path

import html5lib
import pytest
from flask.testing import FlaskClient

from nixery.auth.access import access_from_config
from nixery.build.contract import ImageRequest, IndexRequest, Revision
from nixery.cli import progress_bar
from nixery.config import Config
from nixery.index import BuildRecord, ImageRecord, LayerSummary, Phase
from nixery.index.sqlite import SqliteIndex
from nixery.registry import pages
from nixery.registry.api import create_app
from nixery.registry.records import BuildRecorder, new_build_id, public_source
from nixery.registry.service import RegistryService
from nixery.registry.sources import PathSource
from nixery.storage.filesystem import FilesystemStorage
from nixery.util.logs import ContextFilter, JsonFormatter
from tests.conftest import TEST_PKGS

HOSTILE = '<script>alert("x")</script>'


class NoBuilds:
    """The pages never build: a request that would is a bug in the test."""

    def build_index(self, key: str, request: IndexRequest, revision: Revision) -> ImageRecord:
        raise AssertionError("a single-platform registry builds no index")

    def build(
        self, key: str, request: ImageRequest, revision: Revision, report: object = None
    ) -> ImageRecord:
        raise AssertionError("the pages must not build")


def record(build_id: str, **changes: object) -> BuildRecord:
    fields: dict[str, object] = {
        "id": build_id,
        "repository": "shell/hello",
        "tag": "latest",
        "key": "a" * 64,
        "source": f"path:{TEST_PKGS}",
        "commit": "c" * 40,
        "client": "address:192.0.2.77",
        "started_at": 1_800_000_000.0,
        "ended_at": 1_800_000_004.5,
        "outcome": "built",
        "phases": (
            Phase("resolve", 0.0, 0.01),
            Phase("evaluate", 0.01, 1.2),
            Phase("realise", 1.21, 2.5),
            Phase("layering", 3.71, 0.05),
            Phase("layers", 3.76, 0.6),
            Phase("publish", 4.36, 0.1),
        ),
        "layers": (
            LayerSummary("sha256:" + "1" * 64, 2_000_000, ("/nix/store/aaa-hello-2.12",)),
            LayerSummary("sha256:" + "2" * 64, 4096, ("/nix/store/aaa-hello-2.12",)),
        ),
        "manifest_digest": "sha256:" + "3" * 64,
        **changes,
    }
    return BuildRecord(**fields)  # type: ignore[arg-type]


def app_client(tmp_path: Path, config: Config) -> tuple[FlaskClient, SqliteIndex]:
    index = SqliteIndex(tmp_path / "index.sqlite")
    service = RegistryService(
        PathSource(TEST_PKGS),
        index,
        FilesystemStorage(tmp_path / "blobs"),
        NoBuilds(),
        records=BuildRecorder(index),
    )
    return create_app(service, access_from_config(config)).test_client(), index


@pytest.fixture
def public(tmp_path: Path) -> Iterator[tuple[FlaskClient, SqliteIndex]]:
    yield app_client(tmp_path, Config(storage_path=tmp_path))


def parse_strictly(html: str) -> None:
    parser = html5lib.HTMLParser(strict=True)
    parser.parse(html)  # raises on any parse error
    assert not parser.errors


def test_landing_explains_how_to_pull_with_this_host(
    public: tuple[FlaskClient, SqliteIndex],
) -> None:
    client, index = public
    index.put_build(record(new_build_id(1_800_000_000.0)))
    response = client.get("/", base_url="http://registry.example:8080")
    assert response.status_code == 200
    assert response.content_type == "text/html; charset=utf-8"
    html = response.get_data(as_text=True)
    parse_strictly(html)
    assert "docker pull registry.example:8080/shell/git/htop" in html
    revision = PathSource(TEST_PKGS).resolve("latest")
    assert revision is not None
    commit = revision.commit
    assert commit in html, "the source's current commit"
    for text in ("bashinteractive", "arm64", "cacert", "shell/hello:latest", "built"):
        assert text.lower() in html.lower()
    assert "192.0.2.77" not in html, "public mode shows no client addresses"


def test_pages_carry_a_strict_content_security_policy(
    public: tuple[FlaskClient, SqliteIndex],
) -> None:
    client, index = public
    build_id = new_build_id(1_800_000_000.0)
    index.put_build(record(build_id))
    for path in ("/", f"/builds/{build_id}"):
        response = client.get(path)
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "unsafe-inline" not in policy
        assert "script-src" not in policy, "no script at all: default-src 'none' covers it"
        html = response.get_data(as_text=True)
        style = re.search(r"<style>(.*?)</style>", html, re.S)
        assert style is not None
        digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy, "the inline stylesheet is allowed by its hash"
        assert (
            "<script" not in html
            and " style=" not in html
            and "http" not in html.split("<body>")[0].replace("http-equiv", "")
        ), "no script, no style attribute, no external asset"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_build_page_shows_phases_layers_pull_by_digest_and_the_log(
    public: tuple[FlaskClient, SqliteIndex],
) -> None:
    client, index = public
    ok = new_build_id(1_800_000_000.0)
    failed = new_build_id(1_800_000_001.0)
    index.put_build(record(ok))
    index.put_build(
        record(
            failed,
            repository="broken",
            outcome="failed",
            layers=(),
            manifest_digest="",
            message="nix-store --realise exited with 1",
            log="frobnicator.c:42: error: expected ';'\n",
        )
    )
    html = client.get(f"/builds/{ok}", base_url="http://r.example").get_data(as_text=True)
    parse_strictly(html)
    assert "docker pull r.example/shell/hello@sha256:" + "3" * 64 in html
    assert html.count("<rect") == 6 and "realise" in html and "/nix/store/aaa-hello-2.12" in html
    failed_html = client.get(f"/builds/{failed}").get_data(as_text=True)
    parse_strictly(failed_html)
    assert "frobnicator.c:42" in failed_html and "Nix log" in failed_html
    missing = client.get("/builds/" + "0" * 24)
    assert missing.status_code == 404 and "No such build" in missing.get_data(as_text=True)


def test_json_forms(public: tuple[FlaskClient, SqliteIndex]) -> None:
    client, index = public
    build_id = new_build_id(1_800_000_000.0)
    index.put_build(record(build_id))
    landing = client.get("/?format=json").get_json()
    assert landing["builds"][0]["id"] == build_id
    assert "client" not in landing["builds"][0], "public mode: no addresses"
    by_accept = client.get(f"/builds/{build_id}", headers={"Accept": "application/json"})
    assert by_accept.content_type == "application/json"
    data = by_accept.get_json()
    assert data["layer_count"] == 2 and data["total_bytes"] == 2_004_096
    assert data["phases"][2]["name"] == "realise"
    browser = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.content_type.startswith("text/html")
    unknown = client.get("/builds/nope?format=json")
    assert unknown.status_code == 404 and unknown.get_json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_hostile_names_tags_logs_and_paths_are_escaped_everywhere(
    public: tuple[FlaskClient, SqliteIndex],
) -> None:
    client, index = public
    build_id = new_build_id(1_800_000_000.0)
    index.put_build(
        record(
            build_id,
            repository=HOSTILE,
            tag=HOSTILE,
            outcome="refused",
            refused={HOSTILE: HOSTILE},
            message=HOSTILE,
            log=HOSTILE,
            source=HOSTILE,
            layers=(LayerSummary(HOSTILE, 1, (HOSTILE,)),),
            manifest_digest=HOSTILE,
        )
    )
    for path in ("/", f"/builds/{build_id}"):
        html = client.get(path).get_data(as_text=True)
        parse_strictly(html)
        assert "<script" not in html
        assert "&lt;script&gt;" in html
    # Through the registry's front door a hostile name or tag never becomes a build or a page.
    for path in (f"/v2/{HOSTILE}/manifests/latest", f"/v2/hello/manifests/{HOSTILE}"):
        response = client.get(path)
        assert response.status_code in (400, 404), "refused as a name or a path"
        assert response.content_type == "application/json"
    assert len(index.recent_builds(10)) == 1


def test_team_pages_need_credentials(tmp_path: Path) -> None:
    config = Config(storage_path=tmp_path, access="team", team_members="alice@example.com")
    client, index = app_client(tmp_path, config)
    build_id = new_build_id(1_800_000_000.0)
    index.put_build(record(build_id, repository="secret-project"))
    for path in ("/", f"/builds/{build_id}", "/?format=json"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic ")
        assert b"secret-project" not in response.data
    assert client.post("/").status_code == 401, "the access check comes before the method"


def test_source_credentials_never_reach_records_or_pages() -> None:
    assert public_source("git:https://user:s3cret@git.example/pkgs.git") == (
        "git:https://git.example/pkgs.git"
    )


def test_request_log_lines_are_json_with_the_trace(
    public: tuple[FlaskClient, SqliteIndex], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = public
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "demo-project")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    try:
        client.get(
            "/v2/", headers={"X-Cloud-Trace-Context": "0123456789abcdef0123456789abcdef/1;o=1"}
        )
        client.get("/v2/nosuch..name/manifests/latest")
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    requests = [line for line in lines if "httpRequest" in line]
    assert len(requests) == 2
    traced, untraced = requests
    assert traced["severity"] == "INFO"
    assert (
        traced["logging.googleapis.com/trace"]
        == "projects/demo-project/traces/0123456789abcdef0123456789abcdef"
    )
    assert traced["httpRequest"]["status"] == 200
    assert traced["httpRequest"]["requestMethod"] == "GET"
    assert "logging.googleapis.com/trace" not in untraced
    assert untraced["httpRequest"]["status"] == 400


def test_progress_bar_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_terminal = io.StringIO()
    monkeypatch.setattr("sys.stderr", not_a_terminal)
    with progress_bar("realising", "pkg") as advance:
        for done in range(1, 5):
            advance(done, 4)
    assert not_a_terminal.getvalue() == "", "nothing in CI or a pipe"

    leader, follower = os.openpty()
    # A terminal of 100 columns, as a real one has a size.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    with os.fdopen(follower, "w") as terminal:
        monkeypatch.setattr("sys.stderr", terminal)
        with progress_bar("realising", "pkg") as advance:
            for done in range(1, 5):
                advance(done, 4)
        terminal.flush()
    # One read returns what the pty holds at that moment, which may be only the first frame:
    # read until the closed follower's end (EIO on Linux).
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    shown = b"".join(chunks).decode()
    assert "realising" in shown and "4/4" in shown


def test_timeline_scales_phases_to_its_width() -> None:
    line = pages.timeline(record("x"), width=450)
    assert [row.name for row in line.rows] == list(
        ("resolve", "evaluate", "realise", "layering", "layers", "publish")
    )
    last = line.rows[-1]
    assert abs(last.x + last.width - 450) < 2
