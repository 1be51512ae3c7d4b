"""Shared test set-up: the offline Nix environment, the bundled test package set, and the test
tiers.

Every test belongs to exactly one tier, a marker (declared in pyproject.toml):
- unit: no Nix, no network, no servers in other processes; the whole tier runs in under 30 s;
- e2e: real Nix, real clients (skopeo, umoci, git, chroot) and processes the test starts;
- cloud: the Firestore and GCS emulators, the dev stack, checkov on terraform/;
- bench: the benchmarks in quick mode;
- fuzz: the property and fuzz suite.
A test's own marker, its module's `pytestmark` or a parameter's marks name its tier; otherwise
its directory does (TIER_OF_DIRECTORY), then the process fixtures it uses (TIER_OF_FIXTURE),
and a test with none of these is a unit test. tests/test_tiers.py checks the result.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from tests.tokeninfo_standin import TokenInfoStandIn

REPO = Path(__file__).resolve().parent.parent
TEST_PKGS = REPO / "tests" / "pkgs"
OFFLINE_NIX_CONFIG = "substituters =\nexperimental-features = nix-command"


TIERS = ("unit", "e2e", "cloud", "bench", "fuzz")
TIER_OF_DIRECTORY = {"e2e": "e2e", "cloud": "cloud", "fuzz": "fuzz"}
# Fixtures that start a server in another process: a test using one is not a unit test.
TIER_OF_FIXTURE = {
    "standin": "e2e",
    "registry": "e2e",
    "git_registry": "e2e",
    "gcs_emulator": "cloud",
    "firestore_emulator": "cloud",
}
SETUP = "scripts/setup-system --test"


def pytest_configure(config: pytest.Config) -> None:
    # Nothing here reaches a binary cache; without this every Nix call retries one.
    os.environ.setdefault("NIX_CONFIG", OFFLINE_NIX_CONFIG)


def tiers_of(item: pytest.Item) -> list[str]:
    return [marker.name for marker in item.iter_markers() if marker.name in TIERS]


def default_tier(item: pytest.Item) -> str:
    path = Path(str(item.path)).relative_to(REPO / "tests")
    if len(path.parts) > 1 and path.parts[0] in TIER_OF_DIRECTORY:
        return TIER_OF_DIRECTORY[path.parts[0]]
    for fixture in getattr(item, "fixturenames", ()):
        if fixture in TIER_OF_FIXTURE:
            return TIER_OF_FIXTURE[fixture]
    return "unit"


# First, so that `-m unit` selects on the tiers given here.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not tiers_of(item):
            item.add_marker(default_tier(item))


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
