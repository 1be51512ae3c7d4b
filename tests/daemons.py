"""Real container engines for tests: dockerd (and its containerd, for `ctr`) and podman.

Each runs on private paths only (data root, exec root, sockets, client config), so several can
run on one machine beside each other and beside a system engine, and leaves nothing behind:

    with Dockerd(tmp_path) as docker:
        pulled = docker.run("pull", "127.0.0.1:5000/shell")   # a CompletedProcess (text)
        docker.ctr("images", "pull", "--plain-http", ref)      # dockerd's own containerd
        subprocess.run(["docker", "info"], env=docker.env)     # any CLI: DOCKER_HOST is set

    with Podman(tmp_path) as podman:
        podman.run("pull", "--tls-verify=false", ref)

`Dockerd` starts `dockerd` in its own session without privileged networking (no iptables, no
bridge: containers run with `--network none`), with the overlay2 storage driver, or vfs when
overlay2 cannot run on the data root, waits until it answers `/_ping`, and on exit stops its
whole process group (and any containerd shim that left it), unmounts what is still mounted
under its paths and removes them. `run` uses Debian's Docker 20.10 CLI (/usr/bin/docker) unless
another CLI is given: a newer CLI may sit first on PATH and behaves differently.

Unix socket paths are limited to 108 bytes, so sockets and the exec root live in a short
temporary directory of their own; the (large) data root lives under the directory given.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from tests.conftest import in_ci, unavailable

DOCKER_20_10_CLI = "/usr/bin/docker"
READY_TIMEOUT_SECONDS = 60.0
COMMAND_TIMEOUT_SECONDS = 600.0


def docker_available() -> bool:
    return shutil.which("dockerd") is not None and Path(DOCKER_20_10_CLI).exists()


def podman_available() -> bool:
    return shutil.which("podman") is not None


def _mount_points_under(roots: list[Path]) -> list[str]:
    """Mount points at or below any of `roots`, deepest first (so children unmount first)."""
    prefixes = [str(root.resolve()) for root in roots]
    points: list[str] = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            # Field 5 is the mount point, with spaces and the like octal-escaped.
            point = line.split()[4].encode().decode("unicode_escape")
            if any(point == prefix or point.startswith(prefix + "/") for prefix in prefixes):
                points.append(point)
    return sorted(set(points), key=lambda point: point.count("/"), reverse=True)


def _remove_private_tree(roots: list[Path]) -> None:
    for point in _mount_points_under(roots):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


def kill_processes_mentioning(marker: str) -> None:
    """SIGKILL every process whose command line names `marker` (one of our private paths):
    containerd shims and conmon start sessions of their own, out of their engine's group."""
    for pid in _pids_mentioning(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _pids_mentioning(marker: str) -> list[int]:
    """Processes whose command line names one of our private paths: containerd shims start
    their own sessions, so stopping dockerd's process group does not reach them."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def stop_group(popen: subprocess.Popen[bytes], grace_seconds: float = 15.0) -> None:
    """SIGTERM the process group `popen` leads, SIGKILL it if it outlives the grace."""
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            popen.poll()
            try:
                os.killpg(popen.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


class PrivateEngine:
    """An engine on private paths: `start()` on entering, `stop()` on leaving, also when
    `start()` fails halfway (what it started is stopped, what it made is removed)."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class Dockerd(PrivateEngine):
    """A private dockerd. Attributes once started: `host` (unix://...), `env` (DOCKER_HOST and
    a private DOCKER_CONFIG, for any docker CLI), `containerd_address` (for `ctr --address`),
    `storage_driver` (the one that ran), `log_path`."""

    def __init__(self, workdir: Path, storage_driver: str = "overlay2") -> None:
        self.workdir = workdir
        self.requested_driver = storage_driver
        self.storage_driver = storage_driver
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="dockerd-"))
        self.data_root = workdir / "dockerd-data"
        self.exec_root = self.runtime_dir / "exec"
        self.socket_path = self.runtime_dir / "docker.sock"
        self.client_config = workdir / "docker-config"
        self.log_path = workdir / "dockerd.log"
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def containerd_address(self) -> str:
        return str(self.exec_root / "containerd" / "containerd.sock")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.client_config)}

    def run(
        self,
        *args: str,
        cli: str = DOCKER_20_10_CLI,
        timeout: float = COMMAND_TIMEOUT_SECONDS,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` against this daemon; never raises on a non-zero exit."""
        return subprocess.run(
            [cli, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )

    def ctr(
        self, *args: str, namespace: str = "nixery-tests", timeout: float = COMMAND_TIMEOUT_SECONDS
    ) -> subprocess.CompletedProcess[str]:
        """`ctr ARGS` against dockerd's containerd, in a namespace docker itself does not use."""
        return subprocess.run(
            ["ctr", "--address", self.containerd_address, "--namespace", namespace, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _command(self, driver: str) -> list[str]:
        return [
            "dockerd",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--bridge=none",
            f"--storage-driver={driver}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.runtime_dir / 'docker.pid'}",
            f"--host={self.host}",
        ]

    def _ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(2.0)
                client.connect(str(self.socket_path))
                client.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return client.recv(64).startswith(b"HTTP/1.")
        except OSError:
            return False

    def _try_start(self, driver: str) -> bool:
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.client_config.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self._command(driver),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                return False
            if self._ping():
                self.storage_driver = driver
                return True
            time.sleep(0.1)
        raise RuntimeError(f"dockerd did not answer in time; see {self.log_path}")

    def start(self) -> Dockerd:
        drivers = [self.requested_driver] + (["vfs"] if self.requested_driver != "vfs" else [])
        for driver in drivers:
            if self._try_start(driver):
                return self
            self._stop_processes()
            _remove_private_tree([self.data_root, self.exec_root])
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"dockerd did not start with {drivers}:\n{tail}")

    def _stop_processes(self) -> None:
        if self._popen is not None:
            stop_group(self._popen)
            self._popen = None
        kill_processes_mentioning(str(self.runtime_dir))

    def stop(self) -> None:
        self._stop_processes()
        _remove_private_tree([self.data_root, self.runtime_dir, self.client_config])


class Podman(PrivateEngine):
    """podman with private storage (`--root`, `--runroot`, `--tmpdir`): no daemon, every
    command is its own process. `run` never raises on a non-zero exit. `RUN_LIMITS` are the
    ulimits `podman run` needs on these machines (its defaults exceed the hard limits)."""

    RUN_LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "podman-root"
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="podman-"))

    @property
    def global_options(self) -> list[str]:
        return [
            f"--root={self.root}",
            f"--runroot={self.runtime_dir / 'run'}",
            f"--tmpdir={self.runtime_dir / 'tmp'}",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
        ]

    def run(
        self, *args: str, timeout: float = COMMAND_TIMEOUT_SECONDS
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *self.global_options, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )

    def start(self) -> Podman:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def stop(self) -> None:
        kill_processes_mentioning(str(self.runtime_dir))  # a conmon left by a failed run
        _remove_private_tree([self.root, self.runtime_dir])


def engine_pull_messages(socket_path: Path, reference: str) -> list[dict[str, str]]:
    """`POST /images/create` on a dockerd's socket: its JSON progress messages, in order (the
    CLI prints per-layer lines such as "Already exists" only on a terminal)."""

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(str(socket_path))

    connection = UnixConnection("docker", timeout=COMMAND_TIMEOUT_SECONDS)
    query = urllib.parse.urlencode({"fromImage": reference, "tag": "latest"})
    connection.request("POST", f"/images/create?{query}")
    answer = connection.getresponse()
    decoder = json.JSONDecoder()
    text, messages = answer.read().decode(), []
    position = 0
    while (position := len(text) - len(text[position:].lstrip())) < len(text):
        message, position = decoder.raw_decode(text, position)
        messages.append(message)
    connection.close()
    assert answer.status == 200, text
    return messages


# --- Fixtures (tests/e2e and tests/cloud's conftest.py load them): one daemon per module -----

# Outside CI only: there the fixtures below fail instead, saying what to install.
needs_docker = pytest.mark.skipif(
    not in_ci() and not docker_available(),
    reason="docker.io is not installed (scripts/setup-system --test)",
)
needs_podman = pytest.mark.skipif(
    not in_ci() and not podman_available(),
    reason="podman is not installed (scripts/setup-system --test)",
)


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    if not docker_available():
        unavailable("docker.io is not installed")
    with Dockerd(tmp_path_factory.mktemp("dockerd")) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    if not podman_available():
        unavailable("podman is not installed")
    with Podman(tmp_path_factory.mktemp("podman")) as runner:
        yield runner
