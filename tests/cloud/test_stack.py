"""The cloud deployment end to end on the dev stack: the registry function, the builder, the
Firestore and GCS emulators, each a real process on 127.0.0.1, pulled from by skopeo.

With TEST_BUILDER=container the builder is the builder image (tests/builder_container.py)
run by Docker, on its own Nix (2.26), as the dev stack's `--builder-image` runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from nixery.cloud.devstack import (
    BuilderContainer,
    DevStack,
    ManagedProcess,
    StackError,
    free_port,
    start_builder_container,
    start_dev_stack,
    write_service_account_key,
)
from nixery.cloud.devstack import start_function as start_function_process
from nixery.cloud.idtoken import key_file_token_source
from tests.builder_container import (
    BuiltImage,
    builder_in_container,
    container_nix_shims,
    image_path,
    self_contained_package_set,
)
from tests.cloud.faultproxy import FaultyProxy
from tests.cloud.v4check import UrlRejected, verify_v4_url, with_query
from tests.conftest import TEST_PKGS, require_tools, unavailable
from tests.daemons import DOCKER_20_10_CLI
from tests.e2e.conftest import OCI_MANIFEST, pull_and_unpack
from tests.e2e.registry_process import NIX_COMMANDS
from tests.emulators import FIRESTORE_EMULATOR_INSTALL

pytestmark = pytest.mark.cloud

NONCE = uuid.uuid4().hex
ABSENT = "sha256:" + "0" * 64


@pytest.fixture(scope="module")
def pkgs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test package set plus `sleepy`, a build that takes seconds and is new every run; with
    its own busybox inside, so that a builder container sees all of it in this directory."""
    directory = tmp_path_factory.mktemp("stack-pkgs")
    directory.chmod(0o755)  # readable by the builder image's non-root user
    self_contained_package_set(TEST_PKGS, directory / "pkgs")
    (directory / "default.nix").write_text(
        f"""args:
let
  pkgs = import ./pkgs args;
  slow = seconds: name: derivation {{
    inherit name;
    system = pkgs.busybox.system;
    builder = "${{pkgs.busybox}}/bin/sh";
    PATH = "${{pkgs.busybox}}/bin";
    args = [ "-c" "sleep ${{toString seconds}}; mkdir -p $out/share; echo {NONCE} > $out/share/nonce" ];
  }};
in
pkgs // {{ sleepy = slow 8 "sleepy-1.0"; patient = slow 6 "patient-1.0"; }}
"""
    )
    return directory


class NixCalls:
    def __init__(self, log: Path) -> None:
        self.log = log

    def evaluations(self, name: str) -> list[str]:
        """nix-instantiate runs whose requested names include `name`."""
        if not self.log.exists():
            return []
        return [
            line
            for line in self.log.read_text().splitlines()
            if line.startswith("nix-instantiate") and f'"{name}"' in line
        ]

    def realising(self, name: str) -> bool:
        return self.log.exists() and any(
            ".drv!" in line and name in line for line in self.log.read_text().splitlines()
        )


@pytest.fixture(scope="module")
def stack_and_calls(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pkgs_dir: Path
) -> Iterator[tuple[DevStack, NixCalls]]:
    require_tools("nix-build", "skopeo", "umoci", "chroot")
    state = tmp_path_factory.mktemp("dev-stack")
    # The Nix calls are logged by shims the builder finds first on its PATH (in the container,
    # a directory it shares with the host).
    shims = container_nix_shims(
        state / "nix-shims", state / "nix-shims" / "calls.log", NIX_COMMANDS
    )
    nix_log = shims / "calls.log"
    settings = {"NIXERY_PKGS_PATH": str(pkgs_dir), "NIXERY_LEASE_SECONDS": "3"}
    container = None
    builder_path = os.environ["PATH"]
    if builder_in_container():
        image: BuiltImage = request.getfixturevalue("builder_image")
        container = BuilderContainer(
            image.tag, DOCKER_20_10_CLI, image.docker.env, shared_paths=(str(shims),)
        )
        builder_path = image_path(image)
    try:
        stack = start_dev_stack(
            state,
            settings,
            builder_env={"PATH": f"{shims}{os.pathsep}{builder_path}"},
            builder_container=container,
        )
    except StackError as reason:
        unavailable(f"the dev stack cannot run here: {reason}", FIRESTORE_EMULATOR_INSTALL)
    try:
        yield stack, NixCalls(nix_log)
    finally:
        stack.stop()


@pytest.fixture
def stack(stack_and_calls: tuple[DevStack, NixCalls]) -> DevStack:
    return stack_and_calls[0]


@pytest.fixture
def nix_calls(stack_and_calls: tuple[DevStack, NixCalls]) -> NixCalls:
    return stack_and_calls[1]


def host(url: str) -> str:
    return urlsplit(url).netloc


def manifest(registry_url: str, image: str) -> requests.Response:
    return requests.get(
        f"{registry_url}/v2/{image}/manifests/latest", headers={"Accept": OCI_MANIFEST}, timeout=300
    )


def bucket_of(stack: DevStack) -> gcs.Bucket:
    client = gcs.Client(
        project=stack.project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": stack.processes["gcs-emulator"].url},
    )
    return client.bucket(stack.bucket)


def assert_every_blob_whole(stack: DevStack) -> set[str]:
    """Every object under blobs/ holds exactly the bytes its name promises."""
    bucket = bucket_of(stack)
    names = set()
    for blob in bucket.client.list_blobs(bucket.name, prefix="blobs/sha256/"):
        content = blob.download_as_bytes()
        assert hashlib.sha256(content).hexdigest() == blob.name.rsplit("/", 1)[1], blob.name
        names.add(blob.name)
    return names


def staging_objects(stack: DevStack) -> list[str]:
    bucket = bucket_of(stack)
    return [b.name for b in bucket.client.list_blobs(bucket.name, prefix="staging/")]


def test_skopeo_pull_through_the_function_and_run(stack: DevStack, tmp_path: Path) -> None:
    rootfs = pull_and_unpack(host(stack.registry_url), "shell/hello", tmp_path)
    ran = subprocess.run(
        ["chroot", str(rootfs), "/bin/hello"], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "Hello from nixery!"


def test_blob_gets_redirect_to_verifiable_signed_urls(stack: DevStack) -> None:
    body = manifest(stack.registry_url, "shell/hello").json()
    key = json.loads(stack.key_file.read_text())
    public_key = serialization.load_pem_private_key(
        key["private_key"].encode(), password=None
    ).public_key()
    now = datetime.now(UTC)
    for blob in [body["config"], *body["layers"]]:
        url = f"{stack.registry_url}/v2/shell/hello/blobs/{blob['digest']}"
        response = requests.get(url, allow_redirects=False, timeout=30)
        assert response.status_code == 303
        assert response.headers["Docker-Content-Digest"] == blob["digest"]
        location = response.headers["Location"]
        assert host(location) == stack.processes["gcs-emulator"].host_port
        verify_v4_url(location, public_key, now=now, email=key["client_email"])  # type: ignore[arg-type]
        with pytest.raises(UrlRejected, match="expired"):
            verify_v4_url(
                location,
                public_key,  # type: ignore[arg-type]
                now=now + timedelta(minutes=16),
                email=key["client_email"],
            )
        with pytest.raises(UrlRejected, match="signature"):
            verify_v4_url(
                with_query(location, **{"X-Goog-Expires": "604800"}),
                public_key,  # type: ignore[arg-type]
                now=now,
                email=key["client_email"],
            )
        other = location.replace(blob["digest"].removeprefix("sha256:"), "0" * 64)
        with pytest.raises(UrlRejected, match="signature"):
            verify_v4_url(other, public_key, now=now, email=key["client_email"])  # type: ignore[arg-type]
        content = requests.get(location, timeout=30).content
        assert "sha256:" + hashlib.sha256(content).hexdigest() == blob["digest"]


def test_head_manifest_by_digest_and_errors(stack: DevStack) -> None:
    url = stack.registry_url
    first = manifest(url, "hello")
    assert first.status_code == 200
    digest = first.headers["Docker-Content-Digest"]
    by_digest = requests.get(f"{url}/v2/hello/manifests/{digest}", timeout=30)
    assert by_digest.status_code == 200 and by_digest.content == first.content
    assert by_digest.headers["Content-Type"] == OCI_MANIFEST
    layer = first.json()["layers"][0]
    head = requests.head(f"{url}/v2/hello/blobs/{layer['digest']}", timeout=30)
    assert head.status_code == 200 and "Location" not in head.headers
    assert int(head.headers["Content-Length"]) == layer["size"]

    def error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
        assert response.status_code == status, response.text
        assert response.headers["Content-Type"] == "application/json"
        return response.json()["errors"][0]

    missing = error(manifest(url, "hello/nosuchthing/notaderivation"), 404, "MANIFEST_UNKNOWN")
    assert missing["detail"]["packages"] == ["nosuchthing", "notaderivation"]
    blob = requests.get(f"{url}/v2/hello/blobs/{ABSENT}", allow_redirects=False, timeout=30)
    error(blob, 404, "BLOB_UNKNOWN")
    absent_head = requests.head(f"{url}/v2/hello/blobs/{ABSENT}", timeout=30)
    assert absent_head.status_code == 404 and "Location" not in absent_head.headers
    error(requests.get(f"{url}/v2/hello/manifests/{ABSENT}", timeout=30), 404, "MANIFEST_UNKNOWN")
    error(requests.get(f"{url}/v2/hello/blobs/sha256:xyz", timeout=30), 400, "DIGEST_INVALID")
    error(manifest(url, "Hello"), 400, "NAME_INVALID")
    error(requests.put(f"{url}/v2/hello/manifests/latest", timeout=30), 405, "UNSUPPORTED")
    error(requests.post(f"{url}/v2/hello/blobs/uploads/", timeout=30), 405, "UNSUPPORTED")
    # Through the function too: a 400 whose message names Nix's error and the build page, and
    # a retry answered from the function's memory (the same build record, so no new build).
    failed = error(manifest(url, "broken"), 400, "MANIFEST_INVALID")
    assert "frobnicator.c:42" in failed["detail"]["log"]
    assert failed["message"].startswith("Nix failed building broken: builder for '/nix/store/")
    assert failed["message"].endswith(f"(build log: {failed['detail']['build']})")
    assert error(manifest(url, "broken"), 400, "MANIFEST_INVALID") == failed


def test_builder_demands_a_valid_id_token(stack: DevStack) -> None:
    build = stack.builder_url + "/"
    assert requests.post(build, data=b"{}", timeout=30).status_code == 401
    wrong_audience = key_file_token_source(stack.key_file, "https://elsewhere.example")()
    refused = requests.post(
        build, data=b"{}", headers={"Authorization": f"Bearer {wrong_audience}"}, timeout=30
    )
    assert refused.status_code == 403 and refused.json()["errors"][0]["code"] == "DENIED"
    other_key = write_service_account_key(stack.state_dir / "other-key.json", "elsewhere")
    forged = key_file_token_source(other_key, stack.builder_env["NIXERY_BUILDER_AUDIENCE"])()
    assert (
        requests.post(
            build, data=b"{}", headers={"Authorization": f"Bearer {forged}"}, timeout=30
        ).status_code
        == 403
    )
    good = key_file_token_source(stack.key_file, stack.builder_env["NIXERY_BUILDER_AUDIENCE"])()
    malformed = requests.post(
        build, data=b"{}", headers={"Authorization": f"Bearer {good}"}, timeout=30
    )
    assert malformed.status_code == 400, "past authentication, the request itself is checked"


def test_a_build_longer_than_the_wait_is_a_503_and_finishes_anyway(
    stack: DevStack, nix_calls: NixCalls, tmp_path: Path
) -> None:
    impatient = start_function_process(
        "registry",
        tmp_path / "impatient.log",
        {**os.environ, **stack.registry_env, "NIXERY_BUILD_WAIT": "2"},
    )
    try:
        started = time.monotonic()
        response = manifest(impatient.url, "patient")
        assert time.monotonic() - started < 20, "the function never outwaits its own limit"
        assert response.status_code == 503 and response.headers.get("Retry-After")
        assert response.json()["errors"][0]["code"] == "UNAVAILABLE"
    finally:
        impatient.stop()
    # The builder went on; the same image is served once it is done, built only once.
    finished = manifest(stack.registry_url, "patient")
    assert finished.status_code == 200, finished.text
    assert len(nix_calls.evaluations("patient")) == 1


class Instances:
    """Processes a test started (and containers, when the builder is one), stopped together."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []
        self.cleanups: list[Callable[[], None]] = []

    def __getitem__(self, index: int) -> ManagedProcess:
        return self.processes[index]

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        for cleanup in self.cleanups:
            cleanup()


def _second_instance(stack: DevStack, tmp_path: Path, **builder_env: str) -> Instances:
    """Another builder instance (a second container, when the stack's builder is one) and a
    registry function instance that calls it."""
    port = free_port()
    builder_url = f"http://127.0.0.1:{port}/"
    env = {**stack.builder_env, "NIXERY_BUILDER_AUDIENCE": builder_url, **builder_env}
    instances = Instances()
    try:
        if stack.builder_container is None:
            builder = start_function_process(
                "build", tmp_path / "builder2.log", {**os.environ, **env}, port
            )
        else:
            container = replace(stack.builder_container, name=f"{stack.builder_container.name}-2")
            instances.cleanups.append(container.remove)
            builder = start_builder_container(
                container, tmp_path / "builder2.log", env, port, stack.state_dir
            )
        instances.processes.append(builder)
        registry = start_function_process(
            "registry",
            tmp_path / "registry2.log",
            {**os.environ, **stack.registry_env, "NIXERY_BUILDER_URL": builder_url},
        )
        instances.processes.insert(0, registry)
    except BaseException:
        instances.stop()
        raise
    return instances


def test_parallel_pulls_on_two_instances_build_once(
    stack: DevStack, nix_calls: NixCalls, tmp_path: Path
) -> None:
    image = "synthetic.p060/synthetic.p061/synthetic.p062"
    second = _second_instance(stack, tmp_path)
    try:
        registries = [stack.registry_url, second[0].url] * 4

        def pull(job: tuple[int, str]) -> subprocess.CompletedProcess[str]:
            index, registry = job
            return subprocess.run(
                [
                    "skopeo",
                    "copy",
                    "--src-tls-verify=false",
                    f"docker://{host(registry)}/{image}",
                    f"oci:{tmp_path / f'layout{index}'}:img",
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(pull, enumerate(registries)))
        assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
        assert len(nix_calls.evaluations("synthetic.p060")) == 1
        manifests = {
            (tmp_path / f"layout{i}" / "index.json").read_text() for i in range(len(registries))
        }
        assert len(manifests) == 1, "every client got the same manifest digest"
    finally:
        second.stop()


def test_builder_killed_mid_build_leaves_nothing_and_the_next_request_builds(
    stack: DevStack, nix_calls: NixCalls
) -> None:
    blobs_before = assert_every_blob_whole(stack)
    answer: list[requests.Response] = []
    waiting = threading.Thread(target=lambda: answer.append(manifest(stack.registry_url, "sleepy")))
    waiting.start()
    deadline = time.monotonic() + 60
    while not nix_calls.realising("sleepy") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert nix_calls.realising("sleepy"), "the build never started"
    os.killpg(stack.processes["build"].pid, signal.SIGKILL)
    if stack.builder_container is not None:
        stack.builder_container.remove()  # the docker CLI's death leaves its container running
    waiting.join(timeout=60)
    assert answer and answer[0].status_code == 503, answer and answer[0].text
    assert answer[0].headers.get("Retry-After")
    assert answer[0].json()["errors"][0]["code"] == "UNAVAILABLE"

    assert assert_every_blob_whole(stack) == blobs_before, "a killed build published nothing"
    down = manifest(stack.registry_url, "sleepy")
    assert down.status_code == 503 and down.headers.get("Retry-After"), "no hang, no 500"

    stack.restart("build")
    rebuilt = manifest(stack.registry_url, "sleepy")
    assert rebuilt.status_code == 200, rebuilt.text
    assert len(nix_calls.evaluations("sleepy")) == 2
    assert_every_blob_whole(stack)


def test_storage_failure_mid_upload_publishes_nothing_and_a_retry_is_clean(
    stack: DevStack, tmp_path: Path
) -> None:
    gcs_port = stack.processes["gcs-emulator"].port
    proxy = FaultyProxy(gcs_port)
    failing = True
    proxy.cut = lambda request_line: failing and request_line.startswith("PUT /upload/")
    # A builder whose storage traffic goes through the proxy, and gives up on GCS after 2 s.
    second = _second_instance(
        stack, tmp_path, STORAGE_EMULATOR_HOST=proxy.url, NIXERY_GCS_RETRY_SECONDS="2"
    )
    try:
        blobs_before = assert_every_blob_whole(stack)
        image = "synthetic.p100/synthetic.p101"
        broken = manifest(second[0].url, image)
        assert broken.status_code == 503, broken.text
        assert broken.headers.get("Retry-After")
        assert proxy.dropped, "the upload really was cut"
        assert assert_every_blob_whole(stack) == blobs_before
        assert staging_objects(stack) == []

        failing = False
        healed = manifest(second[0].url, image)
        assert healed.status_code == 200, healed.text
        published = assert_every_blob_whole(stack)
        layers = {
            layer["digest"].replace("sha256:", "blobs/sha256/") for layer in healed.json()["layers"]
        }
        assert layers <= published
        assert staging_objects(stack) == []
    finally:
        second.stop()
        proxy.close()
