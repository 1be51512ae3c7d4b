"""The real-dockerd pull benchmark in quick mode: it runs, reports every layout, and the
chain-prefix count it predicts from the manifests is what dockerd reuses ("Already exists").

No wall time is asserted (the machine is shared).
"""

from __future__ import annotations

from benchmarks import bench_docker

from tests.conftest import require_tools, unavailable
from tests.daemons import docker_available


def test_docker_quick_mode_reports_every_layout_and_validates_the_chain_prefix_count() -> None:
    require_tools("nix-build", "skopeo")
    if not docker_available():
        unavailable("dockerd is not installed")
    section = bench_docker.run(quick=True)
    assert section.startswith("## Docker pulls\n")
    for layout in bench_docker.LAYOUTS:
        if layout.quick:
            assert f"| {layout.label} | " in section
    assert "Target, 100 Mbit/s: " in section  # pulled through the throttling proxy too
    assert "every pair agrees." in section
