"""An installed package finds its Nix expressions, as a checkout does."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from nixery.config import find_nix_dir
from tests.conftest import REPO


def test_checkout_finds_nix_dir() -> None:
    assert find_nix_dir() == REPO / "nix"


def test_installed_wheel_carries_and_finds_nix_dir(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("nixery_serverless-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"nixery/nix/resolve.nix", "nixery/nix/popcount.nix", "nixery/cli.py"} <= set(names)

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    found = subprocess.run(
        [sys.executable, "-c", "from nixery.config import find_nix_dir; print(find_nix_dir())"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found == str(target / "nixery" / "nix")
