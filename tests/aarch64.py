"""A real aarch64 binary for the test package set: Debian's busybox-static:arm64, unpacked into
tests/pkgs/aarch64/ (git-ignored) at test set-up, and the Nix settings that let this x86_64
machine "build" for aarch64-linux (the builder stays the static x86_64 busybox)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import OFFLINE_NIX_CONFIG, TEST_PKGS

AARCH64_DIR = TEST_PKGS / "aarch64"
AARCH64_BUSYBOX = AARCH64_DIR / "busybox"
# Nix then accepts derivations for aarch64-linux and runs their (x86_64) builders.
MULTIARCH_NIX_CONFIG = OFFLINE_NIX_CONFIG + "\nextra-platforms = aarch64-linux"
DEBIAN_PACKAGE = "busybox-static:arm64"
EM_AARCH64 = 183
EM_X86_64 = 62


def elf_machine(path: Path) -> int:
    """e_machine of an ELF file (little-endian, as both platforms here are)."""
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


def ensure_aarch64_busybox() -> Path:
    """The aarch64 busybox in the package set, fetched with apt (the arm64 architecture is
    added by scripts/setup-system --test) and unpacked on first use."""
    if AARCH64_BUSYBOX.is_file():
        return AARCH64_BUSYBOX
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        subprocess.run(
            ["apt-get", "download", DEBIAN_PACKAGE],
            cwd=work,
            check=True,
            capture_output=True,
            timeout=300,
        )
        (deb,) = work.glob("busybox-static_*_arm64.deb")
        unpacked = work / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True, timeout=120)
        binary = next(
            p for p in (unpacked / "bin/busybox", unpacked / "usr/bin/busybox") if p.is_file()
        )
        AARCH64_DIR.mkdir(exist_ok=True)
        partial = AARCH64_DIR / ".busybox.partial"
        shutil.copyfile(binary, partial)
        partial.chmod(0o555)
        partial.rename(AARCH64_BUSYBOX)
    assert elf_machine(AARCH64_BUSYBOX) == EM_AARCH64
    return AARCH64_BUSYBOX
