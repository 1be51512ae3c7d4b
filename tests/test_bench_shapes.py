"""The real-shapes layout benchmark: the Debian snapshot it reads, how the snapshot is made from
an apt index, and its quick mode, as CI runs it."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from benchmarks import bench_shapes
from benchmarks.shapes import SHELL, TOOLS, load, snapshot_from_index

from nixery.build.graph import name_version
from tests.conftest import require_tools, unavailable
from tests.daemons import docker_available

INDEX = """\
Package: app
Version: 1:2.0~rc1-1
Installed-Size: 10
Depends: libfoo (>= 1.2) | libbar, mail-transport-agent, python3:any, app
Description: an application
 that spans lines: Depends: not-a-field

Package: libfoo
Version: 1.2-3
Installed-Size: 2
Pre-Depends: libc
Depends: libfoo-data [amd64] <!nocheck>

Package: libfoo-data
Version: 1.2-3
Installed-Size: 1
Depends: libfoo

Package: libc
Version: 2.36
Installed-Size: 30

Package: exim
Version: 4
Installed-Size: 5
Provides: mail-transport-agent
Depends: libc

Package: python3
Version: 3.11
Installed-Size: 20
Depends: libc

Package: libfoo
Version: 0.9
Installed-Size: 99
"""


def test_the_snapshot_keeps_first_alternatives_resolves_providers_and_cuts_cycles() -> None:
    data = snapshot_from_index(INDEX, ["app"])
    packages = data["packages"]
    assert isinstance(packages, dict)
    assert sorted(packages) == ["app", "exim", "libc", "libfoo", "libfoo-data", "python3"]
    # The first alternative, the first provider of a virtual package, no arch qualifier, no
    # self-reference; the first stanza of a package wins.
    assert packages["app"]["depends"] == ["exim", "libfoo", "python3"]
    assert packages["app"]["installed_size"] == 10 * 1024
    assert packages["libfoo"]["version"] == "1.2-3"
    # libfoo <-> libfoo-data: the walk from the sorted names keeps libfoo -> libfoo-data.
    assert packages["libfoo"]["depends"] == ["libc", "libfoo-data"]
    assert packages["libfoo-data"]["depends"] == []
    # Dependents count the whole index, cycles included.
    assert packages["libc"]["dependents"] == 3
    assert packages["libfoo"]["dependents"] == 2
    # Holders too, through every route: libfoo-data holds libc by way of libfoo, and libfoo and
    # libfoo-data hold each other.
    assert packages["libc"]["holders"] == 5  # libfoo, libfoo-data, exim, python3, app
    assert packages["libfoo"]["holders"] == packages["libfoo-data"]["holders"] == 2
    assert packages["app"]["holders"] == 0


def test_a_package_missing_from_the_index_is_an_error() -> None:
    with pytest.raises(ValueError, match="not in the index: nope"):
        snapshot_from_index(INDEX, ["app", "nope"])


def test_the_committed_snapshot_holds_every_tool_and_gives_closures_of_real_size() -> None:
    shapes = load()
    assert {*SHELL, *TOOLS} <= set(shapes.packages)
    git = shapes.closure([*SHELL, "git"])
    assert git.roots == tuple(sorted(shapes.store_path(name) for name in [*SHELL, "git"]))
    assert 30 <= len(git.nodes) <= 200
    assert 50_000_000 <= sum(node.nar_size for node in git.nodes.values()) <= 500_000_000
    libc = shapes.store_path("libc6")
    assert re.fullmatch(r"/nix/store/[0-9a-df-np-sv-z]{32}-libc6-[A-Za-z0-9+._?=-]+", libc)
    # Every path of the closure is referenced from the roots, and references stay inside.
    for node in git.nodes.values():
        assert set(node.references) <= set(git.nodes)
    # The C library is what the most packages of the archive depend on, and in nearly as many
    # closures as any package (gcc-12-base, which it depends on, is in a few more). Every
    # package is held by at least the packages that depend on it.
    references = shapes.popularity("references")
    assert max(references, key=references.__getitem__) == name_version(libc)
    closures = shapes.popularity("closures")
    assert closures[name_version(libc)] >= max(closures.values()) * 0.99
    assert all(closures[name] >= count for name, count in references.items())


def test_store_paths_are_distinct() -> None:
    shapes = load()
    paths = [shapes.store_path(name) for name in shapes.packages]
    assert len(set(paths)) == len(paths)


@pytest.mark.bench
def test_quick_mode_reports_every_layout_with_consistent_figures() -> None:
    section = bench_shapes.run(quick=True)
    assert section.startswith("## Layouts on a real distribution's shapes")
    rows = {
        (cells[0], cells[1]): cells[2:]
        for line in section.splitlines()
        if line.startswith("| ")
        and len(cells := [cell.strip() for cell in line.strip("|").split("|")]) == 6
        and cells[1] in bench_shapes.POPULARITIES
    }
    default = bench_shapes.DEFAULT
    for layout in (default, bench_shapes.ONE_LAYER, bench_shapes.NIXERY):
        assert all((layout, source) in rows for source in ("none", "closures", "references"))
    # One layer per image: one layer, all of it last, and B's whole closure downloaded.
    assert rows[bench_shapes.ONE_LAYER, "none"][:2] == ["1.0 (1)", "100%"]
    one_layer_excess = float(rows[bench_shapes.ONE_LAYER, "none"][2])
    assert one_layer_excess > 1.5
    for layout, _ in rows:
        content, chain = (float(value) for value in rows[layout, "none"][2:])
        # Nothing sends less than what B adds; chain-prefix reuse never beats content-addressed.
        assert 1.0 <= content <= chain <= one_layer_excess
    # The time table: every layout against one layer and Nixery's grouping, anchors at 1.
    times = [line for line in section.splitlines() if line.startswith("| ") and " / " in line[-12:]]
    ratios = {
        line.split(" |")[0].removeprefix("| "): [
            [float(value) for value in cell.split(" / ")] for cell in line.split("|")[2:-1]
        ]
        for line in times
    }
    assert set(ratios) == {label for label, _ in rows} | {bench_shapes.NEW_PATHS_ONLY}
    assert all(one == 1.0 for one, _ in ratios[bench_shapes.ONE_LAYER])
    assert all(nixery == 1.0 for _, nixery in ratios[bench_shapes.NIXERY])
    # The bound pulls A as the default does and B's new paths alone: never slower than it.
    for bound, default_ratios in zip(
        ratios[bench_shapes.NEW_PATHS_ONLY], ratios[default], strict=True
    ):
        assert bound[0] <= default_ratios[0] and bound[1] <= default_ratios[1]
    # The order study: every order on the pairs and the held-out pairs, none below B's new paths.
    orders = [line for line in section.splitlines() if line.startswith("| ") and " moves)" in line]
    assert len(orders) == 1
    study = section.split("What any order can reach")[1]
    medians = [
        float(value)
        for line in study.splitlines()
        if line.startswith("| ") and not line.startswith("| order ")
        for value in line.split("|")[3:5]
    ]
    # Two keys per popularity source, then the holders' key, nar size and the fitted order.
    order_rows = 2 * len(bench_shapes.POPULARITIES) + 3
    assert len(medians) == 2 * order_rows and min(medians) >= 1.0


@pytest.mark.bench
def test_the_package_set_builds_the_snapshots_closures() -> None:
    """`benchmarks/pkgs/shapes.nix` realises what the snapshot describes: the same store paths,
    references and (within the data file's framing) nar sizes, so the pulls measure the shapes
    the model plans."""
    require_tools("nix-build")
    names = [*SHELL, "less"]
    built = subprocess.run(
        ["nix-build", "--no-out-link", str(bench_shapes.SHAPES_PKGS)]
        + [arg for name in names for arg in ("-A", name)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    expected = load().closure(names)
    assert sorted(map(name_version, built)) == sorted(map(name_version, expected.roots))
    info = json.loads(
        subprocess.run(
            ["nix", "path-info", "--json", "--recursive", *built],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    entries = info if isinstance(info, list) else [{"path": k, **v} for k, v in info.items()]
    # The snapshot's store paths carry made-up hashes: compare by name and version.
    real = {name_version(entry["path"]): entry for entry in entries}
    planned = {name_version(path): node for path, node in expected.nodes.items()}
    assert set(real) == set(planned)
    for key, node in planned.items():
        assert sorted(map(name_version, real[key]["references"])) == sorted(
            map(name_version, node.references)
        )
        assert abs(real[key]["narSize"] - node.nar_size) <= 2_000


@pytest.mark.bench
def test_quick_pull_agrees_with_the_manifests() -> None:
    require_tools("nix-build", "skopeo")
    if not docker_available():
        unavailable("dockerd is not installed")
    section = bench_shapes.pull(quick=True, engine_name="20.10")
    assert section.startswith("### Pulled for real: dockerd 20.10 (overlay2)")
    for _, _, label in bench_shapes.pull_layout_specs():
        assert f"| {label}" in section
    assert "| less +tree | 59 | loopback | " in section
    assert "every pull agrees." in section
