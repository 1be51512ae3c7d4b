"""`nixery serve` on what `pip install nixery-serverless` installs (no extras): it builds,
serves and the pulled image runs. The test venv carries every extra, which hid a missing core
dependency from the whole suite once."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import REPO, TEST_PKGS
from tests.e2e.conftest import pull_and_unpack
from tests.e2e.registry_process import RegistryProcess
from tests.only_deps import core_requirements, link_site, python_with_only


def test_serve_builds_and_serves_with_core_dependencies_only(tmp_path: Path) -> None:
    site = link_site(core_requirements(REPO / "pyproject.toml"), tmp_path / "site")
    python, env = python_with_only(site, REPO / "functions")
    env["NIXERY_PKGS_PATH"] = str(TEST_PKGS)
    server = RegistryProcess(tmp_path / "storage", env, python=python)
    (tmp_path / "pull").mkdir()
    with server:
        rootfs = pull_and_unpack(server.host, "shell/hello", tmp_path / "pull")
        ran = subprocess.run(
            ["chroot", str(rootfs), "/bin/hello"], capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == "Hello from nixery!"
    log = server.log_path.read_text()
    assert "Traceback" not in log, log
