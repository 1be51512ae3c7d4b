"""The pages in a real browser: headless Chromium loads `/` and `/builds/<id>` of a running
`nixery serve` after a successful and a failed build; the DOM says what a newcomer needs, the
console stays clean, the HTML parses; the failed pull's error leads to the build's page; every
log line of the server is JSON and carries the trace it was sent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import html5lib
import pytest
import requests

from tests.conftest import TEST_PKGS, unavailable
from tests.e2e.conftest import skopeo_inspect
from tests.e2e.registry_process import RegistryProcess

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
)
# What Chromium logs for a page script error or a blocked resource.
CONSOLE_PROBLEMS = ("Uncaught", "Content Security Policy", "Refused to", "Failed to load resource")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        unavailable("chromium is not installed")
    return path


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """Kept after the run for a person (or CI, as artefacts) to look at; never committed."""
    directory = Path(tempfile.mkdtemp(prefix="nixery-pages-"))
    print(f"screenshots in {directory}")
    return directory


@pytest.fixture(scope="module")
def json_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    storage = tmp_path_factory.mktemp("pages-registry") / "storage"
    env = {"NIXERY_PKGS_PATH": str(TEST_PKGS), "NIXERY_LOG_FORMAT": "json"}
    with RegistryProcess(storage, env) as process:
        yield process


@pytest.fixture(scope="module")
def builds(json_registry: RegistryProcess) -> dict[str, dict[str, Any]]:
    """One successful and one failed build, by their outcome; the failed pull's error too."""
    skopeo_inspect(json_registry.host, "shell/hello")
    failed = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{json_registry.host}/broken"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert failed.returncode != 0
    records = requests.get(f"{json_registry.url}/?format=json", timeout=30).json()["builds"]
    by_outcome = {record["outcome"]: record for record in records}
    assert {"built", "failed"} <= set(by_outcome), records
    by_outcome["failed"]["pull_error"] = failed.stderr
    return by_outcome


def browse(
    chromium: str, url: str, profile: Path, screenshot: Path | None = None
) -> tuple[str, str]:
    """The DOM after load (or the screenshot), and Chromium's console log."""
    action = [f"--screenshot={screenshot}", "--window-size=1280,1400"] if screenshot else []
    action = action or ["--dump-dom"]
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action, url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=profile,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def assert_clean_console(console: str) -> None:
    problems = [
        line for line in console.splitlines() if any(word in line for word in CONSOLE_PROBLEMS)
    ]
    assert not problems, problems


def test_landing_page_in_a_browser(
    json_registry: RegistryProcess,
    builds: dict[str, dict[str, Any]],
    chromium: str,
    screenshots: Path,
    tmp_path: Path,
) -> None:
    dom, console = browse(chromium, f"{json_registry.url}/", tmp_path)
    assert_clean_console(console)
    assert f"docker pull {json_registry.host}/shell/git/htop" in dom
    assert "Recent builds" in dom and "Naming rules" in dom and "Package source" in dom
    assert "shell/hello:latest" in dom and "broken:latest" in dom
    assert f"/builds/{builds['failed']['id']}" in dom
    assert "127.0.0.1</td>" not in dom and "address:" not in dom, "no client addresses"
    shot = screenshots / "landing.png"
    _, console = browse(chromium, f"{json_registry.url}/", tmp_path, shot)
    assert_clean_console(console)
    assert shot.stat().st_size > 10_000
    html = requests.get(f"{json_registry.url}/", timeout=30).text
    parser = html5lib.HTMLParser(strict=True)
    parser.parse(html)


def test_build_pages_in_a_browser(
    json_registry: RegistryProcess,
    builds: dict[str, dict[str, Any]],
    chromium: str,
    screenshots: Path,
    tmp_path: Path,
) -> None:
    built, failed = builds["built"], builds["failed"]
    dom, console = browse(chromium, f"{json_registry.url}/builds/{built['id']}", tmp_path)
    assert_clean_console(console)
    assert f"{json_registry.host}/shell/hello@sha256:" in dom, "pull by digest"
    for phase in ("resolve", "evaluate", "realise", "layering", "layers", "publish"):
        assert f">{phase}</text>" in dom
    assert "-hello-" in dom and "/nix/store/" in dom, "layers with their store paths"
    assert built["layer_count"] > 1 and built["total_bytes"] > 0

    url = f"{json_registry.url}/builds/{failed['id']}"
    dom, console = browse(chromium, url, tmp_path)
    assert_clean_console(console)
    assert "Nix log" in dom and "frobnicator.c:42" in dom
    shot = screenshots / "failed-build.png"
    _, console = browse(chromium, url, tmp_path, shot)
    assert_clean_console(console)
    assert shot.stat().st_size > 10_000
    for page in (f"/builds/{built['id']}", f"/builds/{failed['id']}"):
        html5lib.HTMLParser(strict=True).parse(
            requests.get(json_registry.url + page, timeout=30).text
        )


def test_a_failed_pull_names_its_build_page(
    json_registry: RegistryProcess, builds: dict[str, dict[str, Any]]
) -> None:
    # A refused image is a 4xx, whose message skopeo and docker print: it names the page.
    refused = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{json_registry.host}/hello/nosuch"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert refused.returncode != 0 and "nosuch" in refused.stderr
    assert f"{json_registry.url}/builds/" in refused.stderr, refused.stderr
    refused_id = refused.stderr.split("/builds/", 1)[1][:24]
    record = requests.get(f"{json_registry.url}/builds/{refused_id}?format=json", timeout=30)
    assert record.json()["refused"].keys() == {"nosuch"}
    # A failed build is a 400 too, naming the page; a retry soon after is answered from memory
    # with the page of the build that failed.
    error = requests.get(f"{json_registry.url}/v2/broken/manifests/latest", timeout=600).json()
    page = error["errors"][0]["detail"]["build"]
    assert page == f"{json_registry.url}/builds/{builds['failed']['id']}"
    assert page in error["errors"][0]["message"]
    record = requests.get(page, headers={"Accept": "application/json"}, timeout=30).json()
    assert record["outcome"] == "failed" and "frobnicator.c:42" in record["log"]
    assert "client" not in record


def test_every_log_line_is_json_and_carries_the_trace(
    json_registry: RegistryProcess, builds: dict[str, dict[str, Any]]
) -> None:
    answer = requests.get(
        f"{json_registry.url}/v2/",
        headers={"X-Cloud-Trace-Context": f"{TRACE}/1;o=1"},
        timeout=30,
    )
    assert answer.status_code == 200
    log = json_registry.storage.parent / f"{json_registry.storage.name}-server.log"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert all("severity" in line and "message" in line for line in lines)
    traced = [line for line in lines if line.get("logging.googleapis.com/trace") == TRACE]
    assert any(line.get("httpRequest", {}).get("requestUrl") == "/v2/" for line in traced)
    failed_id = builds["failed"]["id"]
    of_build = [line for line in lines if line.get("build_id") == failed_id]
    assert any("started" in line["message"] for line in of_build)
    assert any(line.get("outcome") == "failed" for line in of_build)
    built_id = builds["built"]["id"]
    phases = {line.get("phase") for line in lines if line.get("build_id") == built_id}
    assert {"evaluate", "realise", "layering", "layers", "publish"} <= phases
    assert os.path.getsize(log) > 0
