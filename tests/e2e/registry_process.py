"""`nixery serve` as a real process on 127.0.0.1, with every Nix invocation counted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._serving import blobs_served

from nixery.cloud.devstack import ManagedProcess, free_port, spawn

NIX_COMMANDS = ("nix", "nix-build", "nix-instantiate", "nix-store")
# What `nixery serve` logs when its start-up check of the source's Nix is over, however it ended.
SOURCE_CHECKED = "nixery.local.assemble:"
SOURCE_CHECK_SECONDS = 120


def counting_nix_shims(directory: Path, log: Path) -> Path:
    """Wrappers that log each Nix command line, then run the real command."""
    directory.mkdir(parents=True, exist_ok=True)
    for command in NIX_COMMANDS:
        real = subprocess.run(
            ["sh", "-c", f"command -v {command}"], capture_output=True, text=True, check=True
        ).stdout.strip()
        shim = directory / command
        shim.write_text(f'#!/bin/sh\necho "{command} $*" >> "{log}"\nexec "{real}" "$@"\n')
        shim.chmod(0o755)
    return directory


@dataclass
class RegistryProcess:
    storage: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    # The interpreter, with its flags: tests/only_deps.py gives one that sees core deps only.
    python: list[str] = field(default_factory=lambda: [sys.executable])
    nix_log: Path = field(init=False)
    process: ManagedProcess | None = None

    def __post_init__(self) -> None:
        self.nix_log = self.storage.parent / f"{self.storage.name}-nix-calls.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RegistryProcess:
        shims = counting_nix_shims(self.storage.parent / f"{self.storage.name}-shims", self.nix_log)
        env = {
            **os.environ,
            "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
            "STORAGE_PATH": str(self.storage),
            "PORT": str(self.port),
            **self.env,
        }
        self.process = spawn(
            "nixery serve",
            [*self.python, "-m", "nixery", "serve", "--host", "127.0.0.1"],
            self.port,
            self.log_path,
            env,
        )
        # Tests count Nix calls: let the start-up check's evaluation land before they start.
        deadline = time.monotonic() + SOURCE_CHECK_SECONDS
        while SOURCE_CHECKED not in self.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    @property
    def log_path(self) -> Path:
        return self.storage.parent / f"{self.storage.name}-server.log"

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def log_mark(self) -> int:
        """Where the server's log ends now: `blobs_served(since=...)` reads what follows."""
        return self.log_path.stat().st_size

    def blobs_served(self, since: int = 0) -> list[str]:
        """Digests of the blobs answered 200 to a GET, in order, after the log mark `since`."""
        return blobs_served(self.log_path, since)

    def nix_calls(self, command: str | None = None) -> list[str]:
        if not self.nix_log.exists():
            return []
        lines = self.nix_log.read_text().splitlines()
        return [line for line in lines if command is None or line.split(" ", 1)[0] == command]

    def __enter__(self) -> RegistryProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
