"""`functions/` deploys as it stands: its requirements match pyproject, its imports stay lean."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

from tests.conftest import REPO
from tests.only_deps import link_site, python_with_only

BUILDER_ONLY = ("isal", "networkx", "gunicorn", "waitress", "zstandard")


def _requirement_lines() -> set[str]:
    lines = (REPO / "functions" / "requirements.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_requirements_match_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    flask = [dep for dep in project["dependencies"] if dep.startswith("flask")]
    assert _requirement_lines() == {*flask, *project["optional-dependencies"]["cloud"]}


def test_function_loads_with_its_requirements_only(tmp_path: Path) -> None:
    # main.py from functions/ alone, as Cloud Functions imports it, on an interpreter holding
    # requirements.txt's distributions and nothing else: the builder's libraries are absent.
    site = link_site(_requirement_lines(), tmp_path / "site")
    python, env = python_with_only(site, REPO / "functions")
    probe = (
        "import sys, main, nixery.cloud.function, nixery.registry.api\n"
        f"print(','.join(m for m in {BUILDER_ONLY!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run(
        [*python, "-c", probe],
        cwd=REPO / "functions",
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == ""
