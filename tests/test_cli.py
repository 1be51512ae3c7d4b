"""The `nixery` command line: popcount output, and clear start-up errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_PKGS


def nixery(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nixery", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("count", "busybox_count"),
    # Closures: tool and syntheticAll hold busybox without referring to it (tests/test_nix.py).
    [(None, 309), ("closures", 309), ("references", 307)],
)
def test_popcount_writes_nixerys_format(
    tmp_path: Path, count: str | None, busybox_count: int
) -> None:
    output = tmp_path / "popularity.json"
    result = nixery(
        "popcount",
        *(["--count", count] if count else []),
        "--pkgs-path",
        str(TEST_PKGS),
        "--storage-path",
        str(tmp_path / "state"),
        "--realise",
        "-o",
        str(output),
    )
    assert result.returncode == 0, result.stderr
    counts = json.loads(output.read_text())
    assert all(isinstance(v, int) and v > 0 for v in counts.values())
    assert counts["busybox-static"] == busybox_count
    assert list(counts) == sorted(counts)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT must be a int"),
        ({"NIXERY_PKGS_PATH": "/no/such/package/set"}, "does not exist"),
        ({"NIX_POPULARITY_URL": "/no/such/popularity.json"}, "NIX_POPULARITY_URL"),
        ({"NIXERY_STORAGE_BACKEND": "gcs", "GCS_BUCKET": "b"}, "NIXERY_STORAGE_BACKEND=filesystem"),
    ],
)
def test_serve_refuses_bad_settings_clearly(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = nixery("serve", env={"STORAGE_PATH": str(tmp_path), **env})
    assert result.returncode == 2
    assert "configuration error" in result.stderr and message in result.stderr


def test_flags_override_the_environment(tmp_path: Path) -> None:
    result = nixery("serve", "--port", "0", env={"STORAGE_PATH": str(tmp_path)})
    assert result.returncode == 2 and "PORT must be positive" in result.stderr
