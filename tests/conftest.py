"""Shared test set-up: the offline Nix environment and the bundled test package set."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.tokeninfo_standin import TokenInfoStandIn

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


@pytest.fixture(scope="module")
def standin() -> Iterator[TokenInfoStandIn]:
    """The tokeninfo stand-in, answering for the team's tokens (tests.team.TOKENS), one per test
    module; a test that counts calls uses a token of its own."""
    from tests.team import TOKENS
    from tests.tokeninfo_standin import TokenInfoStandIn

    with TokenInfoStandIn() as server:
        server.answers.update(TOKENS)
        yield server
