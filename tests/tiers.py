"""The test tiers: every test belongs to exactly one, a marker declared in pyproject.toml.

- unit: no Nix, no network, no servers in other processes; the whole tier runs in under 30 s;
- e2e: real Nix, real clients (skopeo, umoci, docker, podman, chromium, git, chroot) and
  processes the test starts;
- cloud: the Firestore and GCS emulators, the dev stack, checkov on terraform/;
- bench: the benchmarks in quick mode;
- fuzz: the property and fuzz suite.

A test's own marker, its module's `pytestmark` or a parameter's marks name its tier; otherwise
its directory does (TIER_OF_DIRECTORY), then the server fixtures it uses (TIER_OF_FIXTURE), and a
test with none of these is a unit test. tests/conftest.py applies this at collection;
tests/test_tiers.py checks the result. Loaded as a plugin (`-p tests.tiers`), this module also
writes what it saw to the file named by NIXERY_TIER_REPORT.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TIERS = ("unit", "e2e", "cloud", "bench", "fuzz")
TESTS = Path(__file__).resolve().parent
TIER_OF_DIRECTORY = {"e2e": "e2e", "cloud": "cloud", "fuzz": "fuzz"}
# Fixtures that start a server in another process: a test using one is not a unit test.
TIER_OF_FIXTURE = {
    "standin": "e2e",
    "registry": "e2e",
    "git_registry": "e2e",
    "gcs_emulator": "cloud",
    "firestore_emulator": "cloud",
}

# Node id -> {"tiers": [...], "fixtures": [...]}, for every test collected.
Report = dict[str, dict[str, list[str]]]
COLLECTED = pytest.StashKey[Report]()


def tiers_of(item: pytest.Item) -> list[str]:
    return [marker.name for marker in item.iter_markers() if marker.name in TIERS]


def default_tier(item: pytest.Item) -> str:
    path = Path(str(item.path)).relative_to(TESTS)
    if len(path.parts) > 1 and path.parts[0] in TIER_OF_DIRECTORY:
        return TIER_OF_DIRECTORY[path.parts[0]]
    for fixture in getattr(item, "fixturenames", ()):
        if fixture in TIER_OF_FIXTURE:
            return TIER_OF_FIXTURE[fixture]
    return "unit"


def assign_tiers(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Gives each test without a tier its default, and remembers every test's tiers (before any
    `-m` or `-k` deselects some) for tests/test_tiers.py."""
    for item in items:
        if not tiers_of(item):
            item.add_marker(default_tier(item))
    config.stash[COLLECTED] = {
        item.nodeid: {
            "tiers": tiers_of(item),
            "fixtures": sorted(getattr(item, "fixturenames", ())),
        }
        for item in items
    }


def pytest_collection_finish(session: pytest.Session) -> None:
    report = os.environ.get("NIXERY_TIER_REPORT")
    if report:
        Path(report).write_text(json.dumps(session.config.stash.get(COLLECTED, {}), indent=1))
