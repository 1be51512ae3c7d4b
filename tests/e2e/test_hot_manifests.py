"""Hot manifests come from the process's cache, yet an edited package set is served within the
path source's recheck time (2 s): the cache is keyed by the resolved image, not by the tag."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import requests

from tests.conftest import TEST_PKGS
from tests.e2e.conftest import OCI_MANIFEST
from tests.e2e.registry_process import RegistryProcess

RECHECK_SECONDS = 2.0


def _manifest(registry: RegistryProcess, session: requests.Session) -> requests.Response:
    response = session.get(
        f"{registry.url}/v2/hello/manifests/latest", headers={"Accept": OCI_MANIFEST}, timeout=600
    )
    assert response.status_code == 200, response.text
    return response


def test_an_edited_local_package_set_is_not_served_from_the_hot_cache(tmp_path: Path) -> None:
    pkgs = tmp_path / "pkgs"
    shutil.copytree(TEST_PKGS, pkgs)
    with RegistryProcess(tmp_path / "storage", {"NIXERY_PKGS_PATH": str(pkgs)}) as registry:
        session = requests.Session()
        first = _manifest(registry, session)
        for _ in range(20):  # hot now
            assert _manifest(registry, session).content == first.content

        default = pkgs / "default.nix"
        default.write_text(
            default.read_text().replace("Hello from nixery!", "Hello from an edited nixery!")
        )
        time.sleep(RECHECK_SECONDS + 0.5)
        second = _manifest(registry, session)
        assert second.headers["Docker-Content-Digest"] != first.headers["Docker-Content-Digest"]
        assert _manifest(registry, session).content == second.content
        # Both stay addressable by digest.
        old = session.get(
            f"{registry.url}/v2/hello/manifests/{first.headers['Docker-Content-Digest']}",
            headers={"Accept": OCI_MANIFEST},
        )
        assert old.status_code == 200 and old.content == first.content
