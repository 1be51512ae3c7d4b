"""The image root as data: its entries, and the facts the image config takes from it.

The symlink layer written from it is checked byte by byte in tests/test_layers.py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nixery.build.imageroot import CA_BUNDLE, image_root


def store_path(store: Path, name: str) -> Path:
    path = store / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}-{name}"
    path.mkdir(parents=True)
    return path


def write_file(path: Path, content: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def test_bash_is_reported_and_backs_bin_sh(tmp_path: Path) -> None:
    bash = store_path(tmp_path, "bash-5.2")
    write_file(bash / "bin" / "bash")
    root = image_root([str(bash)])
    assert root.has_bash
    assert root.entries["bin/bash"] == f"{bash}/bin/bash"
    assert root.entries["bin/sh"] == f"{bash}/bin/bash"
    assert root.entries["tmp"] is None and root.world_writable == {"tmp"}

    git = store_path(tmp_path, "git-2.44")
    write_file(git / "bin" / "git")
    without = image_root([str(git)])
    assert not without.has_bash and "bin/sh" not in without.entries


def test_ca_bundle_is_reported_where_the_root_puts_it(tmp_path: Path) -> None:
    assert CA_BUNDLE == "/etc/ssl/certs/ca-bundle.crt"
    nss = store_path(tmp_path, "nss-cacert-3.98")
    write_file(nss / "etc" / "ssl" / "certs" / "ca-bundle.crt")
    merged = image_root([str(nss)])
    assert merged.ca_bundle == CA_BUNDLE
    assert merged.entries[CA_BUNDLE.lstrip("/")] == f"{nss}/etc/ssl/certs/ca-bundle.crt"

    debian_style = store_path(tmp_path, "cacert-1.0")
    write_file(debian_style / "etc" / "ssl" / "certs" / "ca-certificates.crt")
    linked = image_root([str(debian_style)])
    assert linked.ca_bundle == CA_BUNDLE
    assert linked.entries[CA_BUNDLE.lstrip("/")] == (
        f"{debian_style}/etc/ssl/certs/ca-certificates.crt"
    )

    git = store_path(tmp_path, "git-2.44")
    write_file(git / "bin" / "git")
    assert image_root([str(git)]).ca_bundle is None


def test_no_ca_bundle_below_a_package_s_etc_symlink(tmp_path: Path) -> None:
    # A package that makes /etc a symlink keeps it; the bundle is not linked through it.
    linked_etc = store_path(tmp_path, "etc-link-1.0")
    os.symlink("/nonexistent", linked_etc / "etc")
    cacert = store_path(tmp_path, "cacert-1.0")
    write_file(cacert / "etc" / "ssl" / "certs" / "ca-certificates.crt")
    root = image_root([str(linked_etc), str(cacert)])
    assert root.entries["etc"] == f"{linked_etc}/etc"
    assert root.ca_bundle is None
