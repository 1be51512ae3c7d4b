"""An interpreter that sees only some requirements: what a fresh `pip install` would give.

The test venv holds every extra, so a module that imports a library only an extra brings in
passes there and fails on a user's machine (`./scripts/serve` once died of that). Installing
afresh needs the network; instead this links, from the test venv, just the distributions the
requirements need (with their own dependencies, markers evaluated), into a directory that
`python -S` (no site-packages) takes as its only path beside the standard library.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Iterable
from importlib.metadata import Distribution, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def needed_distributions(requirements: Iterable[str]) -> dict[str, Distribution]:
    """The distributions `requirements` pull in, by canonical name; no extras are asked for."""
    found: dict[str, Distribution] = {}
    todo = [Requirement(line) for line in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found[name] = dist = distribution(name)
        for line in dist.requires or []:
            needed = Requirement(line)
            if needed.marker is None or needed.marker.evaluate({"extra": ""}):
                todo.append(needed)
    return found


def core_requirements(pyproject: Path) -> list[str]:
    """What installing the project without extras asks for (the file, not the installed
    metadata, which an editable install leaves stale until the next install)."""
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def link_site(requirements: Iterable[str], site: Path) -> Path:
    """A directory holding links to the top-level files of exactly those distributions."""
    site.mkdir(parents=True, exist_ok=True)
    for dist in needed_distributions(requirements).values():
        for file in dist.files or []:
            top = file.parts[0]
            # `../../bin/...` are console scripts; `.pth` files are site's business, not ours.
            if top == ".." or top.endswith(".pth"):
                continue
            link = site / top
            if not link.exists():
                link.symlink_to(Path(str(dist.locate_file(top))).resolve())
    return site


def python_with_only(site: Path, *source_roots: Path) -> tuple[list[str], dict[str, str]]:
    """An interpreter seeing `site`, `source_roots` and the stdlib: its command and the
    environment variables to add."""
    path = os.pathsep.join(str(root) for root in (*source_roots, site))
    return [sys.executable, "-S"], {"PYTHONPATH": path}
