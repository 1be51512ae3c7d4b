"""Shared test set-up: the offline Nix environment and the bundled test package set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_PKGS = REPO / "tests" / "pkgs"
OFFLINE_NIX_CONFIG = "substituters =\nexperimental-features = nix-command"


def pytest_configure(config: pytest.Config) -> None:
    # Nothing here reaches a binary cache; without this every Nix call retries one.
    os.environ.setdefault("NIX_CONFIG", OFFLINE_NIX_CONFIG)


def require_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools {missing}: run scripts/test, which installs them")
