"""Shared test set-up: the offline Nix environment, the bundled test package set, the test tiers
(tests/tiers.py), and what a test does when something it needs is missing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from tests.tiers import assign_tiers

if TYPE_CHECKING:
    from tests.tokeninfo_standin import TokenInfoStandIn

REPO = Path(__file__).resolve().parent.parent
TEST_PKGS = REPO / "tests" / "pkgs"
OFFLINE_NIX_CONFIG = "substituters =\nexperimental-features = nix-command"
SETUP = "scripts/setup-system --test"


def pytest_configure(config: pytest.Config) -> None:
    # Nothing here reaches a binary cache; without this every Nix call retries one.
    os.environ.setdefault("NIX_CONFIG", OFFLINE_NIX_CONFIG)


# First, so that `-m unit` selects on the tiers given here.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    assign_tiers(config, items)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(what: str, install: str = f"run {SETUP}") -> NoReturn:
    """Something a test needs is missing. In CI (CI=true), where scripts/setup-system --test has
    installed everything, that is a failure; elsewhere a skip that says what is missing."""
    message = f"{what} (to install: {install})"
    if in_ci():
        pytest.fail(f"{message}; CI runs every test, so it must be installed", pytrace=False)
    pytest.skip(message)


def require_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        unavailable(f"missing tools {missing}")


@pytest.fixture(scope="module")
def standin() -> Iterator[TokenInfoStandIn]:
    """The tokeninfo stand-in, answering for the team's tokens (tests.team.TOKENS), one per test
    module; a test that counts calls uses a token of its own."""
    from tests.team import TOKENS
    from tests.tokeninfo_standin import TokenInfoStandIn

    with TokenInfoStandIn() as server:
        server.answers.update(TOKENS)
        yield server
