"""`functions/` deploys as it stands: its requirements match pyproject, its imports stay lean."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from tests.conftest import REPO

BUILDER_ONLY = ("isal", "networkx", "gunicorn", "waitress", "zstandard")


def _requirement_lines() -> set[str]:
    lines = (REPO / "functions" / "requirements.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_requirements_match_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    flask = [dep for dep in project["dependencies"] if dep.startswith("flask")]
    assert _requirement_lines() == {*flask, *project["optional-dependencies"]["cloud"]}


def test_function_imports_no_builder_dependency() -> None:
    # Import main.py from functions/ alone, as Cloud Functions does, and list what got loaded.
    probe = (
        "import sys, main, nixery.cloud.function, nixery.registry.api\n"
        f"print(','.join(m for m in {BUILDER_ONLY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO / "functions",
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == ""
