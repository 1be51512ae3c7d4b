"""Start and stop the Google Cloud emulators that the cloud tests run against.

Each emulator is a separate process in its own session, bound to 127.0.0.1 on a free port, so
that stopping it kills the whole process group: `gcloud` starts a shell that starts java, and
killing only the first process would leave the emulator running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud import storage as gcs

READY_TIMEOUT_SECONDS = 60.0


class EmulatorUnavailable(RuntimeError):
    """The emulator cannot run on this machine (a tool is missing): tests skip with this reason."""


@dataclass
class Emulator:
    name: str
    host_port: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(timeout=10)
        # The group can outlive its leader (java under gcloud's shell).
        _signal_group(self.process, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # start_new_session made the child a group leader: its pid is the group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(name: str, command: list[str], port: int) -> Emulator:
    log_fd, log_name = tempfile.mkstemp(prefix=f"{name}-emulator-", suffix=".log")
    with os.fdopen(log_fd, "wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    emulator = Emulator(name, f"127.0.0.1:{port}", process, Path(log_name))
    try:
        _wait_until_ready(emulator)
    except BaseException:
        emulator.stop()
        raise
    return emulator


def _wait_until_ready(emulator: Emulator) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if emulator.process.poll() is not None:
            raise RuntimeError(
                f"the {emulator.name} emulator exited with {emulator.process.returncode}:\n"
                + emulator.log_tail()
            )
        try:
            with urllib.request.urlopen(emulator.url + "/", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"the {emulator.name} emulator was not ready within {READY_TIMEOUT_SECONDS} s:\n"
        + emulator.log_tail()
    )


def start_gcs_emulator() -> Emulator:
    """gcp-storage-emulator (a test dependency), in memory: nothing survives a stop."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
        "--quiet",
    ]
    return _start("gcs", command, port)


def _gcloud_sdk_root(gcloud: str) -> Path:
    # The binary on PATH is usually a symlink into <sdk>/bin; resolving it is cheaper than
    # asking `gcloud info`, which starts the whole CLI.
    resolved = Path(gcloud).resolve()
    if resolved.parent.name == "bin" and (resolved.parent.parent / "platform").is_dir():
        return resolved.parent.parent
    output = subprocess.run(
        [gcloud, "info", "--format=value(installation.sdk_root)"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    return Path(output)


def firestore_emulator_command(port: int) -> list[str]:
    """The gcloud command line, or EmulatorUnavailable naming what is missing."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorUnavailable("gcloud is not installed: the Firestore emulator comes with it")
    if shutil.which("java") is None:
        raise EmulatorUnavailable("java is not installed: the Firestore emulator needs it")
    emulator_dir = _gcloud_sdk_root(gcloud) / "platform" / "cloud-firestore-emulator"
    if not emulator_dir.is_dir():
        raise EmulatorUnavailable(
            f"the gcloud component cloud-firestore-emulator is not installed ({emulator_dir})"
        )
    return [gcloud, "emulators", "firestore", "start", f"--host-port=127.0.0.1:{port}"]


def start_firestore_emulator() -> Emulator:
    port = free_port()
    return _start("firestore", firestore_emulator_command(port), port)


def wipe_firestore(emulator: Emulator, project: str) -> None:
    request = urllib.request.Request(
        f"{emulator.url}/emulator/v1/projects/{project}/databases/(default)/documents",
        method="DELETE",
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


# Fixtures for the modules that use the emulators (import them into a conftest or test module).
# Each importing module gets its own session-wide emulator process.

TEST_PROJECT = "nixery-test"


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Emulator]:
    emulator = start_gcs_emulator()
    try:
        # The storage client reads the emulator's address from the environment.
        with _environment("STORAGE_EMULATOR_HOST", emulator.url):
            yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[Emulator]:
    try:
        emulator = start_firestore_emulator()
    except EmulatorUnavailable as reason:
        pytest.skip(f"Firestore emulator unavailable: {reason}")
    try:
        with _environment("FIRESTORE_EMULATOR_HOST", emulator.host_port):
            yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def gcs_client(gcs_emulator: Emulator) -> gcs.Client:
    return gcs.Client(project=TEST_PROJECT, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]


@pytest.fixture
def gcs_bucket(gcs_client: gcs.Client) -> gcs.Bucket:
    """A new, empty bucket for each test."""
    return gcs_client.create_bucket(f"test-{uuid.uuid4().hex}")


@pytest.fixture
def firestore_client(firestore_emulator: Emulator) -> firestore.Client:
    return firestore.Client(project=TEST_PROJECT, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
