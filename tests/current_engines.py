"""The container engines users run now: Docker 28.5 (its classic overlay2 store, and the
containerd image store that Docker 29 makes the default), containerd 2.1 (`ctr`) and podman 5.8,
from Debian sid. Debian 12's engines (tests/daemons.py) date from 2022-2023.

They run from a root file system made by `mmdebstrap` from the host's own mirror (kept under the
test cache, keyed by the sources and the package list), on the host's kernel: each command in a
private mount namespace (`unshare -m`) that bind-mounts the root onto itself (Docker's layer
extraction remounts `/`), mounts /proc, /sys and /dev, and the engine's state directory at
/srv/<token>, with its own /run and /tmp (shared by every command of the engine: `ctr run`
leaves fifos in /run for containerd); then `chroot`. The network is the host's, so the engines
pull from `nixery serve` on 127.0.0.1. The mounts die with the namespace's last process;
the engines' state lives outside the cached root.

    with CurrentEngines(containerd_store=True) as engines:
        engines.run("pull", "127.0.0.1:5000/shell")       # `docker pull`: a CompletedProcess
        engines.ctr("images", "pull", "--plain-http", ref)
        engines.podman("pull", "--tls-verify=false", ref)
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.builder_container import cache_dir, host_sources_for, mmdebstrap
from tests.daemons import (
    COMMAND_TIMEOUT_SECONDS,
    READY_TIMEOUT_SECONDS,
    PrivateEngine,
    kill_processes_mentioning,
    stop_group,
)

SUITE = "sid"
PACKAGES = ("docker.io", "docker-cli", "containerd", "runc", "podman", "ca-certificates")
# sid's Release file carries a Valid-Until a mirror snapshot outlives.
APT_OPTIONS = ('Acquire::Check-Valid-Until "false"',)
# Inside the namespace: $1 the root, $2 the state directory, $3 its token; then the command.
NAMESPACE_SCRIPT = """set -e
root=$1 state=$2 token=$3; shift 3
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount --bind "$state/slash-run" "$root/run"
mount --bind "$state/slash-tmp" "$root/tmp"
mount -t tmpfs tmpfs "$root/srv"
mkdir "$root/srv/$token"
mount --bind "$state" "$root/srv/$token"
exec chroot "$root" "$@"
"""
INNER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def engines_available() -> bool:
    return all(shutil.which(tool) for tool in ("mmdebstrap", "unshare", "chroot"))


def sid_sources() -> str:
    """The host's main archive (not -updates, -security: sid has neither) as sid's source."""
    kept = []
    for entry in re.split(r"\n\s*\n", host_sources_for(SUITE)):
        if re.search(r"^Suites:.*\bsid\b(?!-)", entry, re.MULTILINE):  # deb822
            kept.append(re.sub(r"^Suites:.*$", "Suites: sid", entry, flags=re.MULTILINE))
        else:  # one-line entries: `deb [options] URI sid components`
            lines = [line for line in entry.splitlines() if re.match(r"deb\s.*\ssid\s", line)]
            kept.extend(lines)
    assert kept, "the host's apt sources name no main archive"
    return "\n\n".join(entry.strip() for entry in kept) + "\n"


def current_root() -> Path:
    """sid's root file system with the engines (made once, then kept under its key)."""
    sources = sid_sources()
    key = hashlib.sha256("\n".join((sources, *PACKAGES, *APT_OPTIONS)).encode()).hexdigest()[:16]
    root = cache_dir().parent / f"engines-{SUITE}-{key}"
    if root.exists():
        return root
    making = root.with_name(root.name + ".making")
    shutil.rmtree(making, ignore_errors=True)
    making.parent.mkdir(parents=True, exist_ok=True)
    sources_file = making.with_name(making.name + ".sources")
    sources_file.write_text(sources)
    try:
        options = [f"--aptopt={option}" for option in APT_OPTIONS]
        mmdebstrap(SUITE, making, sources_file, *options, f"--include={','.join(PACKAGES)}")
        for old in root.parent.glob(f"engines-{SUITE}-*"):
            if old != making and not old.name.endswith((".making", ".sources")):
                shutil.rmtree(old, ignore_errors=True)  # one kept root: it is 600 MB
        making.rename(root)
    finally:
        shutil.rmtree(making, ignore_errors=True)
        sources_file.unlink(missing_ok=True)
    return root


class CurrentEngines(PrivateEngine):
    """sid's dockerd (with the containerd image store or overlay2) with its containerd, and
    podman, sharing one private state directory. Commands never raise on a non-zero exit."""

    def __init__(self, containerd_store: bool = False) -> None:
        self.containerd_store = containerd_store
        self.root = current_root()
        # Short: the host reaches dockerd's socket through it (108-byte limit).
        self.state = Path(tempfile.mkdtemp(prefix="engines-"))
        self.token = self.state.name
        self.inner = f"/srv/{self.token}"
        self.log_path = self.state / "dockerd.log"
        self._dockerd: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        """dockerd's socket as the host sees it (for the Engine API)."""
        return self.state / "run" / "docker.sock"

    def _in_root(self, command: list[str]) -> list[str]:
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            NAMESPACE_SCRIPT,
            "sh",
            str(self.root),
            str(self.state),
            self.token,
            "env",
            f"PATH={INNER_PATH}",
            f"DOCKER_CONFIG={self.inner}/docker-config",
            f"DOCKER_HOST=unix://{self.inner}/run/docker.sock",
            *command,
        ]

    def in_root(
        self, *command: str, input: str | None = None, timeout: float = COMMAND_TIMEOUT_SECONDS
    ) -> subprocess.CompletedProcess[str]:
        """Any command of the root file system, in a namespace of its own."""
        return subprocess.run(
            self._in_root(list(command)),
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` (sid's CLI) against this dockerd, as `Dockerd.run` is for Debian 12's."""
        return self.in_root("docker", *args, input=input)

    def ctr(self, *args: str, namespace: str = "nixery-tests") -> subprocess.CompletedProcess[str]:
        address = f"{self.inner}/run/exec/containerd/containerd.sock"
        return self.in_root("ctr", "--address", address, "--namespace", namespace, *args)

    def podman(self, *args: str) -> subprocess.CompletedProcess[str]:
        options = [
            f"--root={self.inner}/podman",
            f"--runroot={self.inner}/run/podman",
            f"--tmpdir={self.inner}/run/podman-tmp",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
        ]
        return self.in_root("podman", *options, *args)

    def versions(self) -> dict[str, str]:
        listed = self.in_root("dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *PACKAGES)
        return dict(line.split(" ", 1) for line in listed.stdout.splitlines())

    def start(self) -> CurrentEngines:
        for directory in ("docker-config", "run", "slash-run", "slash-tmp"):
            (self.state / directory).mkdir()
        (self.state / "slash-tmp").chmod(0o1777)
        features = {"containerd-snapshotter": self.containerd_store}
        (self.state / "daemon.json").write_text(json.dumps({"features": features}))
        command = self._in_root(
            [
                "dockerd",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--bridge=none",
                f"--config-file={self.inner}/daemon.json",
                f"--data-root={self.inner}/docker",
                f"--exec-root={self.inner}/run/exec",
                f"--pidfile={self.inner}/run/docker.pid",
                f"--host=unix://{self.inner}/run/docker.sock",
            ]
        )
        with self.log_path.open("ab") as log:
            self._dockerd = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._dockerd.poll() is not None:
                break
            if self.socket_path.exists() and self.run("info").returncode == 0:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"sid's dockerd did not start:\n{self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self._dockerd is not None:
            stop_group(self._dockerd)
            self._dockerd = None
        kill_processes_mentioning(self.inner)  # shims and conmon name the token
        shutil.rmtree(self.state, ignore_errors=True)
