"""`pip install nixery-serverless` without extras gives every module `nixery serve` and the
CLI load (the function's `requirements.txt`: tests/test_function_source.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import REPO
from tests.only_deps import core_requirements, link_site, python_with_only

FUNCTIONS = REPO / "functions"
# Loaded only by the Cloud deployment, whose installs carry the `cloud` extra.
CLOUD_ONLY = ("nixery.cloud", "nixery.storage.gcs", "nixery.index.firestore")


def _modules_of(package: Path, prefix: str) -> list[str]:
    names = []
    for file in sorted(package.rglob("*.py")):
        parts = file.relative_to(package).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join((prefix, *parts)))
    return names


def _run(
    command: list[str], extra_env: dict[str, str], code: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, "-c", code],
        cwd=FUNCTIONS,
        env={**os.environ, **extra_env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_interpreter_sees_only_the_named_requirements(tmp_path: Path) -> None:
    command, env = python_with_only(link_site(["flask>=3.0"], tmp_path / "site"))
    seen = _run(command, env, "import flask, werkzeug, jinja2; print(flask.__name__)")
    assert seen.returncode == 0, seen.stderr
    for absent in ("pytest", "waitress", "google.cloud.storage"):
        missing = _run(command, env, f"import {absent}")
        assert "ModuleNotFoundError" in missing.stderr, (absent, missing.stderr)


def test_every_local_module_imports_with_core_dependencies_only(tmp_path: Path) -> None:
    modules = [
        name
        for name in _modules_of(FUNCTIONS / "nixery", "nixery")
        if not name.startswith(CLOUD_ONLY) and name != "nixery.__main__"
    ]
    assert "nixery.build.substituter" in modules and "nixery.local.push" in modules
    command, env = python_with_only(
        link_site(core_requirements(REPO / "pyproject.toml"), tmp_path / "site"), FUNCTIONS
    )
    imported = _run(
        command, env, f"import importlib\nfor m in {modules!r}: importlib.import_module(m)"
    )
    assert imported.returncode == 0, imported.stderr
    helped = _run(
        command,
        env,
        "import sys; sys.argv = ['nixery', '--help']; from nixery.cli import main; main()",
    )
    assert helped.returncode == 0 and "serve" in helped.stdout, helped.stderr
