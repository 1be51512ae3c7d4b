"""The containerd and podman pull benchmark in quick mode: it runs, reports each client (Debian
12's and sid's), and the layer reuse it counts from the manifests is what the clients fetched
(the registry's access log).

No wall time is asserted (the machine is shared).
"""

from __future__ import annotations

import re

import pytest
from benchmarks import bench_clients

from tests.conftest import require_tools, unavailable
from tests.current_engines import engines_available
from tests.daemons import docker_available, podman_available

pytestmark = pytest.mark.bench


def test_clients_quick_mode_reports_both_clients_and_validates_the_reuse_count() -> None:
    require_tools("nix-build", "skopeo")
    if not (docker_available() and podman_available() and engines_available()):
        unavailable("dockerd (for its containerd), podman or mmdebstrap is not installed")
    section = bench_clients.run(quick=True)
    assert section.startswith("## Content-addressed pulls: containerd and podman\n")
    for client in bench_clients.CLIENTS:
        row = next(line for line in section.splitlines() if line.startswith(f"| {client} | "))
        # Both quick layouts: seconds, then B's reused / layers and kB.
        assert len(re.findall(r"\d+\.\d+ \(\d+\.\d+x\)", row)) == len(bench_clients.QUICK_LAYOUTS)
        assert len(re.findall(r"\d+ / \d+, [\d,]+", row)) == len(bench_clients.QUICK_LAYOUTS)
    assert "every pull agrees" in section
