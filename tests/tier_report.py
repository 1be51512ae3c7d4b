"""A pytest plugin for tests/test_tiers.py: after collection, writes each test's tier markers and
fixtures as JSON to the file named by NIXERY_TIER_REPORT."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

TIERS = ("unit", "e2e", "cloud", "bench", "fuzz")


def pytest_collection_finish(session: pytest.Session) -> None:
    report = {
        item.nodeid: {
            "tiers": [marker.name for marker in item.iter_markers() if marker.name in TIERS],
            "fixtures": sorted(getattr(item, "fixturenames", ())),
        }
        for item in session.items
    }
    Path(os.environ["NIXERY_TIER_REPORT"]).write_text(json.dumps(report, indent=1))
