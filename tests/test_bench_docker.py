"""The real-dockerd pull benchmark in quick mode, with Debian 12's dockerd (overlay2) and sid's
with the containerd image store: it runs, reports every layout, the reuse it predicts from the
manifests (chain-prefix, content-addressed) is what dockerd reuses, and it reports the
per-layer cost fitted to fresh pulls and the bound that fit puts on any layout.

No wall time is asserted (the machine is shared).
"""

from __future__ import annotations

import re

import pytest
from benchmarks import bench_docker

from tests.conftest import require_tools, unavailable
from tests.current_engines import engines_available
from tests.daemons import docker_available

pytestmark = pytest.mark.bench

NUMBER = r"-?\d+\.\d+"


@pytest.mark.parametrize("engine", ["20.10", "28.5-containerd"])
def test_docker_quick_mode_reports_every_layout_and_validates_the_reuse_count(engine: str) -> None:
    require_tools("nix-build", "skopeo")
    if engine == "20.10" and not docker_available():
        unavailable("dockerd is not installed")
    if engine != "20.10" and not engines_available():
        unavailable("mmdebstrap is not installed")
    section = bench_docker.run(quick=True, engine_name=engine)
    suffix = "" if engine == "20.10" else ": dockerd 28.5 (containerd image store)"
    for heading in ("## Docker pulls", "### Per-layer cost", "### What any layout can reach"):
        assert f"{heading}{suffix}\n" in section
    counted = "content-addressed" if engine != "20.10" else "chain-prefix"
    assert f"- The {counted} count validated against what dockerd pulled: " in section
    for layout in bench_docker.LAYOUTS:
        if layout.quick:
            assert f"| {layout.label} | " in section
    assert "Target, 100 Mbit/s: " in section  # pulled through the throttling proxy too
    assert "every pair agrees." in section

    cost = section[section.index("### Per-layer cost") :]
    fit = re.search(
        rf"c0 = ({NUMBER}) s, cl = ({NUMBER}) s per layer\*\*, R² = ({NUMBER}) "
        r"\((\d+) pulls, (\d+) distinct layer counts\)",
        cost,
    )
    assert fit is not None, cost
    assert int(fit[5]) >= 2  # a line through one layer count fits nothing
    assert re.search(rf"cb = {NUMBER} s per MB, R² = {NUMBER}", cost)

    bound = section[section.index("### What any layout can reach") :]
    for link in bench_docker.QUICK_LINKS:
        row = re.search(
            rf"^\| {re.escape(link)} \| {NUMBER} \({NUMBER}\) \| .* \| (yes|no|\*\*yes\*\*) \| `chunked` \d+, [\d.]+ MB chunks: {NUMBER} \|$",
            bound,
            re.M,
        )
        assert row is not None, bound
    assert "- Target <= 0.8x one layer, by the model: " in bound


def test_the_cost_fit_recovers_known_costs() -> None:
    layers = [2.0, 5.0, 17.0, 49.0, 2.0, 2.0]
    megabytes = [2.6, 2.6, 2.6, 2.6, 1.2, 3.9]
    seconds = [0.2 + 0.08 * x + 0.15 * z for x, z in zip(layers, megabytes, strict=True)]
    c0, cl, cb, r2 = bench_docker.fit_plane(layers, megabytes, seconds)
    assert (round(c0, 6), round(cl, 6), round(cb, 6), round(r2, 6)) == (0.2, 0.08, 0.15, 1.0)
    with pytest.raises(ValueError, match="do not separate"):
        bench_docker.fit_plane(layers[:4], megabytes[:4], seconds[:4])  # bytes never vary
