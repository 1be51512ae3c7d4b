"""The serving benchmarks in quick mode: they run, report every cell, and measure what nixery serves.

No figure is asserted (the machine is shared): only that each suite produces its section and
that the incremental suite's layers are the layers the registry really serves.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from benchmarks import _orders, bench_incremental, bench_warm

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


def test_the_order_study_counts_what_one_layer_per_path_downloads(tmp_path: Path) -> None:
    """`benchmarks._orders` predicts, from paths alone, the chain-prefix download of `prefix`
    layering (one layer per path) as the registry's layer writer makes it."""
    require_tools("nix-build")
    pair = bench_incremental.choose_pairs(1, bench_incremental.QUICK_SIZES)[0]
    bench = bench_incremental.Workbench(tmp_path / "bench", [pair.a_image, pair.b_image])
    graph = bench.union_closure([pair.a_image, pair.b_image])
    path_size = {path: bench.store_layer([path]).size for path in graph.nodes}
    wanted = bench.closure(pair.b_image)
    links = bench.symlink_layer(wanted.roots).size
    prepared = _orders.pair_paths(bench.closure(pair.a_image), wanted, path_size, links)
    assert prepared.ideal == bench.ideal_bytes(pair.a_image, pair.b_image)[0]

    for popularity in ("none", "popcount"):
        order = _orders.key_orders(graph, bench.popularity(popularity))[
            "`prefix_order_key` (the default's)"
        ]
        served = bench_incremental.chain_prefix_bytes(
            bench.image_layers(pair.a_image, "prefix", 94, popularity),
            bench.image_layers(pair.b_image, "prefix", 94, popularity),
        )
        assert served > links  # B downloads store paths, not only its symlinks
        predicted = _orders.chain_excess(prepared, _orders.positions(order), path_size)
        assert predicted * prepared.ideal == pytest.approx(served)

    start = sorted(graph.nodes)
    fitted = _orders.fitted_order(start, [prepared], path_size, 50, seed=1)
    assert sorted(fitted) == start
    assert _orders.median_excess([prepared], _orders.positions(fitted), path_size) <= (
        _orders.median_excess([prepared], _orders.positions(start), path_size)
    )
