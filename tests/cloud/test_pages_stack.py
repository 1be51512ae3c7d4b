"""The pages from the Cloud Function on the dev stack: build records written by the function
from the Cloud Run builder's report (through the build contract) into the Firestore emulator,
read back at `/` and `/builds/<id>`; both services log JSON lines with the build id."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import html5lib
import pytest
import requests

from nixery.cloud.devstack import DevStack, StackError
from tests.builder_container import start_test_stack
from tests.conftest import TEST_PKGS, require_tools, unavailable
from tests.e2e.conftest import skopeo_inspect
from tests.emulators import FIRESTORE_EMULATOR_INSTALL

pytestmark = pytest.mark.cloud
TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevStack]:
    require_tools("nix-build", "skopeo")
    state = tmp_path_factory.mktemp("pages-stack")
    try:
        stack = start_test_stack(request, state, TEST_PKGS)
    except StackError as reason:
        unavailable(f"the dev stack cannot run here: {reason}", FIRESTORE_EMULATOR_INSTALL)
    try:
        yield stack
    finally:
        stack.stop()


def test_function_serves_pages_from_firestore_records(stack: DevStack) -> None:
    registry = stack.registry_url
    skopeo_inspect(urlsplit(registry).netloc, "shell/hello")
    failed = requests.get(
        f"{registry}/v2/broken/manifests/latest",
        headers={"X-Cloud-Trace-Context": f"{TRACE}/7;o=1"},
        timeout=600,
    )
    assert failed.status_code == 400
    page = failed.json()["errors"][0]["detail"]["build"]
    assert page.startswith(f"{registry}/builds/")
    # The message is the reason phrase too (gunicorn, under functions-framework, keeps it).
    assert failed.reason == failed.json()["errors"][0]["message"], failed.reason

    landing = requests.get(f"{registry}/", timeout=60)
    assert landing.status_code == 200 and "text/html" in landing.headers["Content-Type"]
    assert "default-src 'none'" in landing.headers["Content-Security-Policy"]
    html5lib.HTMLParser(strict=True).parse(landing.text)
    assert f"docker pull {urlsplit(registry).netloc}/shell/git/htop" in landing.text
    builds = requests.get(f"{registry}/?format=json", timeout=60).json()["builds"]
    by_outcome = {record["outcome"]: record for record in builds}
    built, broken = by_outcome["built"], by_outcome["failed"]
    # The builder's phases and layers crossed the build contract into the function's record.
    assert [phase["name"] for phase in built["phases"]] == [
        "resolve", "evaluate", "realise", "layering", "layers", "publish",
    ]  # fmt: skip
    assert built["layer_count"] > 1 and all(layer["paths"] for layer in built["layers"])
    assert "frobnicator.c:42" in broken["log"]
    assert "client" not in built, "public mode: no addresses"

    html = requests.get(page, timeout=60).text
    html5lib.HTMLParser(strict=True).parse(html)
    assert "frobnicator.c:42" in html and "Nix log" in html
    built_page = requests.get(f"{registry}/builds/{built['id']}", timeout=60).text
    assert "/shell/hello@sha256:" in built_page and "<svg" in built_page


def test_cloud_logs_are_json_with_trace_and_build_ids(stack: DevStack) -> None:
    requests.get(
        f"{stack.registry_url}/v2/", headers={"X-Cloud-Trace-Context": f"{TRACE}/1"}, timeout=60
    )
    logs = {name: Path(stack.processes[name].log_path) for name in ("registry", "build")}
    entries = {
        name: [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
        for name, path in logs.items()
    }
    traced = [e for e in entries["registry"] if e.get("logging.googleapis.com/trace")]
    assert any(e["logging.googleapis.com/trace"].endswith(TRACE) for e in traced)
    assert any("httpRequest" in e for e in entries["registry"])
    registry_builds = {e["build_id"] for e in entries["registry"] if "build_id" in e}
    builder_builds = {e["build_id"] for e in entries["build"] if "build_id" in e}
    assert registry_builds & builder_builds, "the builder logs under the registry's build id"
    phases = {e.get("phase") for e in entries["build"]}
    assert {"evaluate", "realise", "layers"} <= phases
    assert os.path.getsize(logs["build"]) > 0
