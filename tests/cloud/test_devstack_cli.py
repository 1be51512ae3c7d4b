"""`nixery dev-stack start` leaves four wired processes running; `stop` ends every group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import TEST_PKGS, unavailable
from tests.emulators import FIRESTORE_EMULATOR_INSTALL

pytestmark = pytest.mark.cloud


def dev_stack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nixery", "dev-stack", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_then_stop(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    started = dev_stack("start", "--state-dir", str(state), "--pkgs-path", str(TEST_PKGS))
    if started.returncode != 0 and "gcloud" in started.stderr:
        unavailable(started.stderr.strip(), FIRESTORE_EMULATOR_INSTALL)
    assert started.returncode == 0, started.stderr
    recorded = json.loads((state / "stack.json").read_text())["processes"]
    assert set(recorded) == {"firestore-emulator", "gcs-emulator", "build", "registry"}
    try:
        registry = next(
            line.split()[1] for line in started.stdout.splitlines() if line.startswith("registry")
        )
        answer = requests.get(f"{registry}/v2/", timeout=30)
        assert answer.status_code == 200
        assert answer.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert all(group_alive(p["pid"]) for p in recorded.values())
    finally:
        stopped = dev_stack("stop", "--state-dir", str(state))
    assert stopped.returncode == 0, stopped.stderr
    assert not any(group_alive(p["pid"]) for p in recorded.values())
    assert not (state / "stack.json").exists()
    assert dev_stack("stop", "--state-dir", str(state)).returncode == 1, "nothing left to stop"
