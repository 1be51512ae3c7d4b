"""The serving benchmarks in quick mode: they run, report every cell, and measure what nixery serves.

No figure is asserted (the machine is shared): only that each suite produces its section and
that the incremental suite's layers are the layers the registry really serves.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from benchmarks import bench_incremental, bench_warm

from nixery.build.layering import DEFAULT_LAYERING
from tests.conftest import TEST_PKGS, require_tools
from tests.e2e.registry_process import RegistryProcess

pytestmark = pytest.mark.bench

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def test_warm_path_quick_mode_reports_every_cell_against_docker_registry() -> None:
    require_tools("wrk", "ab", "docker-registry", "skopeo", "nix-build")
    section = bench_warm.run(quick=True)
    assert section.startswith("## Warm path\n")
    rows = [line for line in section.splitlines() if re.match(r"\| (manifest|blob) ", line)]
    assert len(rows) == 6 * len(bench_warm.CONNECTIONS)
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 9, row
        assert float(cells[2].replace(",", "")) > 0 and float(cells[5].replace(",", "")) > 0
    assert "warm manifest GET at 32 connections" in section
    assert "p99 at 1 connection" in section


def test_incremental_quick_mode_reports_every_grouping() -> None:
    require_tools("nix-build")
    section = bench_incremental.run(quick=True)
    assert section.startswith("## Incremental pulls\n")
    for config in bench_incremental.CONFIGS:
        assert f"| {bench_incremental.config_label(config)} | none |" in section
    assert "one layer per image" in section


def test_the_pairs_are_fixed_and_overlap() -> None:
    pairs = bench_incremental.choose_pairs(bench_incremental.PAIR_COUNT, bench_incremental.SIZES)
    assert len(pairs) >= 20
    assert pairs == bench_incremental.choose_pairs(
        bench_incremental.PAIR_COUNT, bench_incremental.SIZES
    )
    for pair in pairs:
        assert set(pair.a) & set(pair.b) and set(pair.a) != set(pair.b)
        assert len(pair.b_image) <= 255  # a name the registry accepts


def test_incremental_layers_are_the_layers_nixery_serves(tmp_path: Path) -> None:
    """The suite's figures are what a client pulling from `nixery serve` downloads."""
    require_tools("nix-build")
    pair = bench_incremental.choose_pairs(1, bench_incremental.QUICK_SIZES)[0]
    images = [pair.a_image, pair.b_image]
    bench = bench_incremental.Workbench(tmp_path / "bench", images)
    with RegistryProcess(tmp_path / "storage", {"NIXERY_PKGS_PATH": str(TEST_PKGS)}) as registry:
        for image in images:
            response = requests.get(
                f"{registry.url}/v2/{image}/manifests/latest",
                headers={"Accept": OCI_MANIFEST},
                timeout=600,
            )
            assert response.status_code == 200, response.text
            served = [(layer["digest"], layer["size"]) for layer in response.json()["layers"]]
            measured = [
                (blob.digest, blob.size) for blob in bench.image_layers(image, DEFAULT_LAYERING)
            ]
            assert served == measured
