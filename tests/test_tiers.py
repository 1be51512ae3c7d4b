"""Every test says what it runs: exactly one tier marker each (tests/tiers.py), checked on a
collection of the whole suite: this session's own when it collected every test module (as
`pytest -m unit` does), otherwise one made by a separate pytest process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.tiers import COLLECTED, TESTS, TIER_OF_DIRECTORY, TIER_OF_FIXTURE, TIERS, Report

REPO = TESTS.parent


@pytest.fixture(scope="module")
def collected(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Report:
    in_session = request.config.stash.get(COLLECTED, {})
    modules = {str(path.relative_to(REPO)) for path in TESTS.rglob("test_*.py")}
    if modules <= {node.split("::")[0] for node in in_session}:
        return in_session
    report = tmp_path_factory.mktemp("tiers") / "tiers.json"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "tests.tiers"],
        cwd=REPO,
        env={**os.environ, "NIXERY_TIER_REPORT": str(report), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tests: Report = json.loads(report.read_text())
    assert modules <= {node.split("::")[0] for node in tests}
    return tests


def test_every_test_has_exactly_one_tier(collected: Report) -> None:
    wrong = {node: found["tiers"] for node, found in collected.items() if len(found["tiers"]) != 1}
    assert wrong == {}, f"tests without exactly one of the tiers {TIERS}: {wrong}"


def test_every_tier_has_tests(collected: Report) -> None:
    used = {found["tiers"][0] for found in collected.values() if found["tiers"]}
    assert used == set(TIERS)


def test_unit_tests_start_no_servers(collected: Report) -> None:
    starting = {
        node: sorted(set(found["fixtures"]) & set(TIER_OF_FIXTURE))
        for node, found in collected.items()
        if found["tiers"] == ["unit"] and set(found["fixtures"]) & set(TIER_OF_FIXTURE)
    }
    assert starting == {}, f"unit tests that start a server in another process: {starting}"


def test_the_tier_directories_hold_no_unit_tests(collected: Report) -> None:
    misplaced = [
        node
        for node, found in collected.items()
        if node.split("/")[1] in TIER_OF_DIRECTORY and found["tiers"] == ["unit"]
    ]
    assert misplaced == []
