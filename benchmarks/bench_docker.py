"""Pulls by a real dockerd (Debian's 20.10, overlay2; with `--engine`, Debian sid's 28.5 with
overlay2 or with the containerd image store, `tests/current_engines.py`): fresh pulls and the
incremental pairs, on loopback and over bandwidth-limited links.

    python -m benchmarks.bench_docker [--quick] [--cost-only] [--engine 28.5-containerd]

Every layout has its own `nixery serve` on fresh storage, all running at once; every image is
built once before any timing (a pull times the client, not the build). For each link, a fresh
private dockerd (`tests/daemons.py`) pulls, interleaved: each image or pair with every layout
in turn (in an order rotated from one to the next) before the next image or pair, so that the
load of this shared machine, which drifts over minutes, falls on all layouts alike:

- fresh: the 1- and 10-package images of the generated family and `syntheticall` (the whole
  family, 300+ paths: 100 package names do not fit the 255-character name limit);
- each incremental pair of `bench_incremental`: A, then B, on one dockerd per pair, timed
  separately. The layers dockerd reused for B (those it did not fetch, by the registry's access
  log) are checked against the count the manifests predict: B's leading layers identical to
  A's for overlay2 (chain IDs), every layer A lists for the containerd store.

Links: loopback (dockerd talks to `nixery serve` directly), and `benchmarks/_throttle.py`'s
proxy at 100 and 20 Mbit/s shared by all of a pull's connections (no added latency).

Layouts: the default, the chunked grouping at other budgets, Nixery's grouping (`nixery`),
one layer per image (`prefix` with budget 1: one store layer plus the symlink layer), and the
previous default `per-path` (loopback only: about 0.1 s per layer makes it the slowest by far,
measured before). Target, in one run and per link: the pairs' total wall time (A and B pulls
together) of the default <= 0.8x that of `nixery` and of one layer.

Then, whether any layout could meet that target against one layer:

- per-layer cost: fresh loopback pulls on one dockerd (the image removed after each pull) of
  the 10-package image as the prefix grouping at budgets 1, 4, 16 and 48 (same paths, more
  layers), and of the 1- and 15-package images as one layer (other sizes), 3 rounds; least
  squares `seconds = c0 + cl x layers` over the budget series, and `c0 + cl x layers + cb x
  MB` over every pull;
- what any layout can reach: that fit, plus the bytes at each link's rate, applied to the real
  compressed layers (`bench_incremental.Workbench`) of each pair as one layer per image, as the
  default, and as the pair's oracle (A's and B's common paths in one leading layer both
  share): the predicted pairs totals, beside the measured ones.

`--cost-only`: those two, with the pairs of only the default and one layer (for the measured
totals beside the model's), and no fresh pulls.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy

from benchmarks._serving import blobs_served, manifest_layers, start_nixery
from benchmarks._throttle import link as link_to
from benchmarks.bench_incremental import (
    QUICK_SIZES,
    SIZES,
    Pair,
    Workbench,
    chain_prefix,
    choose_pairs,
    family_name,
)
from nixery.build.graph import ClosureGraph
from nixery.build.layering import DEFAULT_BUDGET, DEFAULT_LAYERING, plan_chunked_layers
from nixery.build.layers import LayerBlob
from tests.current_engines import CurrentEngines, engines_available
from tests.daemons import Dockerd, docker_available

TARGET_RATIO = 0.8
FULL_PAIRS = 8
QUICK_PAIRS = 1
LOOPBACK = "loopback"
# Link label -> bits per second (None: dockerd talks to nixery serve directly).
LINKS: dict[str, float | None] = {LOOPBACK: None, "100 Mbit/s": 100e6, "20 Mbit/s": 20e6}
QUICK_LINKS = (LOOPBACK, "100 Mbit/s")
CHUNKED_BUDGETS = (4, 8, 16, 24)
ONE_LAYER = "one layer"
ORACLE = "oracle"  # the per-pair best (`model_pairs`)
# Path-determined layouts the model also prices: `chunked` at these budgets and mean chunk sizes
# (nar bytes). The best of them is what a layout fixed before the pair is known reaches here.
SWEEP_BUDGETS = (2, 3, 4, 8, 16)
SWEEP_CHUNK_BYTES = (500_000, 1_000_000, 2_000_000, 4_000_000)
QUICK_SWEEP_BUDGETS = (3, 8)
QUICK_SWEEP_CHUNK_BYTES = (2_000_000,)


def sweep_label(budget: int, chunk_bytes: int) -> str:
    return f"`chunked` {budget}, {chunk_bytes / 1e6:g} MB chunks"


def sweep(quick: bool) -> list[tuple[int, int]]:
    budgets = QUICK_SWEEP_BUDGETS if quick else SWEEP_BUDGETS
    sizes = QUICK_SWEEP_CHUNK_BYTES if quick else SWEEP_CHUNK_BYTES
    return [(budget, size) for budget in budgets for size in sizes]


@dataclass(frozen=True)
class Layout:
    label: str
    env: dict[str, str]
    links: tuple[str, ...]  # the links it is pulled over
    quick: bool  # part of quick mode


def _layout(layering: str, budget: int, label: str, links: tuple[str, ...], quick: bool) -> Layout:
    default = layering == DEFAULT_LAYERING and budget == DEFAULT_BUDGET
    return Layout(
        label + (" (default)" if default else ""),
        {"NIXERY_LAYERING": layering, "NIXERY_LAYER_BUDGET": str(budget)},
        links,
        quick or default,
    )


ALL_LINKS = tuple(LINKS)
LAYOUTS: list[Layout] = sorted(
    [
        *(
            _layout("chunked", budget, f"`chunked` {budget}", ALL_LINKS, False)
            for budget in CHUNKED_BUDGETS
        ),
        _layout("nixery", 94, "`nixery`", ALL_LINKS, True),
        _layout("prefix", 1, ONE_LAYER, ALL_LINKS, True),
        _layout("per-path", 94, "`per-path`", (LOOPBACK,), False),
    ],
    key=lambda layout: not layout.label.endswith("(default)"),
)
DEFAULT_LAYOUT = LAYOUTS[0].label
if not DEFAULT_LAYOUT.endswith("(default)"):
    # A default outside the candidates is measured too, first.
    LAYOUTS.insert(
        0,
        _layout(DEFAULT_LAYERING, DEFAULT_BUDGET, f"`{DEFAULT_LAYERING}`", ALL_LINKS, True),
    )
    DEFAULT_LAYOUT = LAYOUTS[0].label
ANCHORS = ("`nixery`", ONE_LAYER)


def _spread_family(count: int) -> str:
    """`count` members of the family spread over it (every 29th), as one image name."""
    return "/".join(family_name(i * 29 % 300) for i in range(count))


def fresh_images(quick: bool) -> list[tuple[str, str]]:
    """(label, image name). Quick mode has none: each pair's A pull is a fresh pull too."""
    if quick:
        return []
    return [
        ("1 package", family_name(7)),
        ("10 packages", _spread_family(10)),
        ("syntheticall (300+ paths)", "syntheticall"),
    ]


@dataclass(frozen=True)
class Pull:
    seconds: float
    layers: int  # the manifest's
    # Layers dockerd printed "Pull complete" for: downloaded, or (the containerd store)
    # unpacked from a blob it held.
    completed: int


class DockerCli(Protocol):
    def run(self, *args: str) -> subprocess.CompletedProcess[str]: ...


@dataclass(frozen=True)
class Engine:
    """A dockerd to pull with: its label, how it reuses layers, how to start a fresh one."""

    label: str
    content_addressed: bool
    start: Callable[[Path], AbstractContextManager[DockerCli]]

    def fetched(self, held: Sequence[str], wanted: Sequence[str]) -> list[int]:
        """Which of B's layers (`wanted`, digests) this engine downloads after A's (`held`):
        those A lacks (content-addressed), or those after the chain prefix B shares with A."""
        if self.content_addressed:
            have = set(held)
            return [index for index, digest in enumerate(wanted) if digest not in have]
        return list(range(chain_prefix(held, wanted), len(wanted)))

    def reused(self, held: Sequence[str], wanted: Sequence[str]) -> int:
        """B's layers this engine reuses after A, predicted from the manifests."""
        return len(wanted) - len(self.fetched(held, wanted))


ENGINES = {
    "20.10": Engine("dockerd 20.10 (overlay2)", False, Dockerd),
    "28.5": Engine("dockerd 28.5 (overlay2)", False, lambda _: CurrentEngines()),
    "28.5-containerd": Engine(
        "dockerd 28.5 (containerd image store)",
        True,
        lambda _: CurrentEngines(containerd_store=True),
    ),
}
DEFAULT_ENGINE = "20.10"


def _pull(docker: DockerCli, ref: str, layers: int) -> Pull:
    started = time.monotonic()
    result = docker.run("pull", ref)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"docker pull {ref} failed: {result.stderr}")
    done = sum(line.endswith("Pull complete") for line in result.stdout.splitlines())
    return Pull(seconds, layers, done)


@dataclass(frozen=True)
class PairPull:
    a: Pull
    b: Pull
    b_fetched: int  # B's layer blobs dockerd fetched (the registry's access log)
    b_predicted: int  # B's layers it should reuse, by the engine's rule, from the manifests


def _layer_digests(host_port: str, image: str) -> list[str]:
    return [layer.digest for layer in manifest_layers(host_port, image)]


@dataclass(frozen=True)
class LinkResult:
    fresh: dict[str, Pull]
    pairs: list[PairPull]

    @property
    def pairs_seconds(self) -> float:
        return sum(pair.a.seconds + pair.b.seconds for pair in self.pairs)


Results = dict[str, dict[str, LinkResult]]  # layout label -> link label -> pulls
Item = TypeVar("Item")


def rotated(items: Sequence[Item], shift: int) -> list[Item]:
    """`items` starting at `shift`: each goes first as often as any other, so a slow stretch
    of this shared machine falls on all alike."""
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


class ImagePair(Protocol):
    @property
    def a_image(self) -> str: ...

    @property
    def b_image(self) -> str: ...


def measure_layouts(
    scratch: Path,
    layouts: list[Layout],
    quick: bool,
    engine: Engine,
    fresh_pulls: bool = True,
    pairs: Sequence[ImagePair] | None = None,
    server_env: Mapping[str, str] | None = None,
    only_links: Sequence[str] | None = None,
) -> Results:
    """Every layout's pulls (the pairs only, without `fresh_pulls`), interleaved: one
    `nixery serve` per layout, all running, and every image or pair pulled with each layout in
    turn (in rotated order) before the next, so that the load of the machine, which drifts over
    minutes, does not favour the layouts measured in a quiet stretch.

    By default the pairs are the first of `Incremental pulls`, from the test package set;
    `pairs` and `server_env` (`NIXERY_PKGS_PATH`, say) pull others, over `only_links`."""
    if pairs is None:
        pairs = choose_pairs(QUICK_PAIRS if quick else FULL_PAIRS, QUICK_SIZES if quick else SIZES)
    fresh_list = fresh_images(quick) if fresh_pulls else []
    images = [image for _, image in fresh_list]
    images += [image for pair in pairs for image in (pair.a_image, pair.b_image)]
    by_label = {layout.label: layout for layout in layouts}
    with contextlib.ExitStack() as stack:
        servers = {}
        digests: dict[str, dict[str, list[str]]] = {}
        for number, layout in enumerate(layouts):
            started = time.monotonic()
            server = start_nixery(scratch / str(number), {**(server_env or {}), **layout.env})
            stack.callback(server.stop)
            servers[layout.label] = server
            digests[layout.label] = {
                image: _layer_digests(server.host_port, image) for image in images
            }
            _progress(f"{layout.label}: serving and built in {time.monotonic() - started:.1f} s")
        results: Results = {layout.label: {} for layout in layouts}
        for link in LINKS:
            labels = [
                label
                for label, layout in by_label.items()
                if link in layout.links
                and (not quick or link in QUICK_LINKS)
                and (only_links is None or link in only_links)
            ]
            if not labels:
                continue
            started = time.monotonic()
            with contextlib.ExitStack() as links:
                host_ports = {
                    label: links.enter_context(link_to(servers[label].port, LINKS[link]))
                    for label in labels
                }
                fresh: dict[str, dict[str, Pull]] = {label: {} for label in labels}
                for number, (image_label, image) in enumerate(fresh_list):
                    for label in rotated(labels, number):
                        with engine.start(scratch / "docker") as docker:
                            fresh[label][image_label] = _pull(
                                docker, f"{host_ports[label]}/{image}", len(digests[label][image])
                            )
                pulled: dict[str, list[PairPull]] = {label: [] for label in labels}
                for number, pair in enumerate(pairs):
                    for label in rotated(labels, number):
                        held, wanted = digests[label][pair.a_image], digests[label][pair.b_image]
                        access_log = Path(servers[label].log_path)
                        with engine.start(scratch / "docker") as docker:
                            first = _pull(docker, f"{host_ports[label]}/{pair.a_image}", len(held))
                            offset = access_log.stat().st_size
                            second = _pull(
                                docker, f"{host_ports[label]}/{pair.b_image}", len(wanted)
                            )
                        fetched = set(blobs_served(access_log, offset)) & set(wanted)
                        pulled[label].append(
                            PairPull(first, second, len(fetched), engine.reused(held, wanted))
                        )
            for label in labels:
                results[label][link] = LinkResult(fresh[label], pulled[label])
            _progress(f"{link}: {len(labels)} layouts pulled in {time.monotonic() - started:.1f} s")
        return results


COST_BUDGETS = (1, 4, 16, 48)
QUICK_COST_BUDGETS = (1, 8)
COST_ROUNDS = 3
QUICK_COST_ROUNDS = 1
# Package counts of the images pulled as one layer beside the budget series: their sizes span
# the pairs' images (up to 17 packages; 15 keeps host:port/name under 255 characters, the
# limit of a reference), so the bytes get a rate of their own.
SIZE_PACKAGES = (1, 15)
QUICK_SIZE_PACKAGES = (1,)
MB = 1e6


def cost_image(quick: bool) -> str:
    """The fresh 10-package image; 3 packages in quick mode (fewer paths to build and pull)."""
    return _spread_family(3 if quick else 10)


def cost_points(quick: bool) -> list[tuple[int, str]]:
    """(budget, image) pulled in each round: the budget series, then the size series."""
    sizes = QUICK_SIZE_PACKAGES if quick else SIZE_PACKAGES
    return [
        *(
            (budget, cost_image(quick))
            for budget in (QUICK_COST_BUDGETS if quick else COST_BUDGETS)
        ),
        *((1, _spread_family(count)) for count in sizes),
    ]


@dataclass(frozen=True)
class CostSample:
    budget: int
    image: str
    round: int
    layers: int  # as dockerd listed them; checked against the manifest
    size: int  # compressed layer bytes of the manifest
    seconds: float


@dataclass(frozen=True)
class LayerCost:
    """Fresh loopback pulls, and two least-squares fits to them: `seconds = c0 + cl x layers`
    over the budget series (one image, so the bytes are fixed), and `c0 + cl x layers + cb x
    MB` over every sample (the model of the bound)."""

    image: str  # of the budget series
    built: dict[tuple[int, str], tuple[int, int]]  # (budget, image) -> layers, compressed bytes
    samples: list[CostSample]
    line: tuple[float, float, float]  # c0, cl, R²: the budget series
    plane: tuple[float, float, float, float]  # c0, cl, cb (s per MB), R²: every sample

    def pull_seconds(self, layers: int, size: int, bits_per_second: float | None) -> float:
        """The model's pull: the loopback fit, plus the bytes at the link's rate (dockerd
        extracts a layer only once it is downloaded, so the two add up for few layers)."""
        c0, cl, cb, _ = self.plane
        transfer = 0.0 if bits_per_second is None else size * 8 / bits_per_second
        return c0 + cl * layers + cb * size / MB + transfer


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least squares `y = c0 + cl x`: (c0, cl, R²)."""
    cl, c0 = statistics.linear_regression(xs, ys)
    return c0, cl, _r2(ys, [c0 + cl * x for x in xs])


def fit_plane(
    xs: Sequence[float], zs: Sequence[float], ys: Sequence[float]
) -> tuple[float, float, float, float]:
    """Least squares `y = c0 + cl x + cb z`: (c0, cl, cb, R²)."""
    design = numpy.column_stack([numpy.ones(len(xs)), xs, zs])
    solution, _, rank, _ = numpy.linalg.lstsq(design, numpy.asarray(ys), rcond=None)
    if rank < 3:
        raise ValueError("the samples do not separate layers from bytes")
    c0, cl, cb = (float(value) for value in solution)
    return c0, cl, cb, _r2(ys, [c0 + cl * x + cb * z for x, z in zip(xs, zs, strict=True)])


def _r2(ys: Sequence[float], fitted: Sequence[float]) -> float:
    mean = statistics.fmean(ys)
    total = sum((y - mean) ** 2 for y in ys)
    residual = sum((y - f) ** 2 for y, f in zip(ys, fitted, strict=True))
    return 1.0 - residual / total if total > 0 else 1.0


def _remove_image(docker: DockerCli, ref: str) -> None:
    """Delete the image and its layers, so the next pull downloads every layer."""
    for args in (("rmi", ref), ("image", "prune", "-af")):
        result = docker.run(*args)
        if result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr}")
    left = docker.run("images", "-qa").stdout.strip()
    if left:
        raise RuntimeError(f"images left after docker rmi {ref}: {left}")


def measure_layer_cost(scratch: Path, quick: bool, engine: Engine) -> LayerCost:
    """Fresh loopback pulls of one image at each budget of the prefix grouping: the same store
    paths in 1 to L store layers (plus the symlink layer), so the layer count is what varies;
    and of smaller and larger images as one layer, so the bytes vary too. One dockerd for the
    whole series (a fresh one per pull would add its start-up to the pulls unevenly), the image
    removed after each pull; rounds rotate the order so drift in the shared machine's load
    spreads over every point."""
    points = cost_points(quick)
    rounds = QUICK_COST_ROUNDS if quick else COST_ROUNDS
    servers = {}
    try:
        built: dict[tuple[int, str], tuple[int, int]] = {}
        for budget, image in points:
            started = time.monotonic()
            if budget not in servers:
                servers[budget] = start_nixery(
                    scratch / f"cost-{budget}",
                    {"NIXERY_LAYERING": "prefix", "NIXERY_LAYER_BUDGET": str(budget)},
                )
            manifest = manifest_layers(servers[budget].host_port, image)
            built[budget, image] = (len(manifest), sum(layer.size for layer in manifest))
            _progress(
                f"per-layer cost, budget {budget}, {image}: {len(manifest)} layers, "
                f"built in {time.monotonic() - started:.1f} s"
            )
        samples = []
        with engine.start(scratch / "cost-docker") as docker:
            # dockerd's first pull is slower (its first registry connection, cold caches):
            # untimed, so it does not land on whichever point a round starts with.
            warm_up = f"{servers[points[0][0]].host_port}/{points[0][1]}"
            _pull(docker, warm_up, built[points[0]][0])
            _remove_image(docker, warm_up)
            for number in range(rounds):
                for budget, image in rotated(points, number):
                    ref = f"{servers[budget].host_port}/{image}"
                    layers, size = built[budget, image]
                    pull = _pull(docker, ref, layers)
                    if pull.completed != layers:
                        raise RuntimeError(
                            f"{ref}: {pull.completed} layers pulled, the manifest lists "
                            f"{layers}: not a fresh pull"
                        )
                    samples.append(
                        CostSample(budget, image, number + 1, layers, size, pull.seconds)
                    )
                    _remove_image(docker, ref)
        _progress(f"per-layer cost: {len(samples)} pulls")
    finally:
        for server in servers.values():
            server.stop()
    image = cost_image(quick)
    series = [sample for sample in samples if sample.image == image]
    line = fit_line([float(s.layers) for s in series], [s.seconds for s in series])
    plane = fit_plane(
        [float(s.layers) for s in samples],
        [s.size / MB for s in samples],
        [s.seconds for s in samples],
    )
    return LayerCost(image, built, samples, line, plane)


def _image_label(image: str) -> str:
    count = image.count("/") + 1
    return f"{count} package" + ("s" if count > 1 else "")


def _heading_suffix(engine: Engine) -> str:
    """The default engine's sections keep their names; another's name the engine."""
    return "" if engine == ENGINES[DEFAULT_ENGINE] else f": {engine.label}"


def cost_report(cost: LayerCost, engine: Engine) -> list[str]:
    c0, cl, r2 = cost.line
    p0, pl, pb, pr2 = cost.plane
    series = [sample for sample in cost.samples if sample.image == cost.image]
    lines = [
        "### Per-layer cost" + _heading_suffix(engine),
        "",
        "Fresh loopback pulls, one `nixery serve` per budget L (`NIXERY_LAYERING=prefix "
        "NIXERY_LAYER_BUDGET=L`: an image's store paths in up to L layers, plus the symlink "
        f"layer): the {_image_label(cost.image)} image at every L, and images of other sizes "
        "as one layer (L = 1). One dockerd for the series; after each pull the image and its "
        "layers are removed (`docker rmi`, `docker image prune -af`, none left in `docker "
        "images -qa`), and every pull completed every layer the manifest lists. "
        f"{len({sample.round for sample in cost.samples})} round(s), each pulling every row "
        "once, in rotated order, after one untimed pull.",
        "",
        "| image | L | layers | compressed kB | pulls, s |",
        "|---|--:|--:|--:|---|",
    ]
    for (budget, image), (layers, size) in cost.built.items():
        seconds = [
            f"{s.seconds:.2f}" for s in cost.samples if (s.budget, s.image) == (budget, image)
        ]
        lines.append(
            f"| {_image_label(image)} | {budget} | {layers} | {size / 1000:,.0f} "
            f"| {', '.join(seconds)} |"
        )
    lines += [
        "",
        f"- The {_image_label(cost.image)} image, seconds = c0 + cl x layers: **c0 = {c0:.3f} s, "
        f"cl = {cl:.4f} s per layer**, R² = {r2:.3f} ({len(series)} pulls, "
        f"{len({sample.layers for sample in series})} distinct layer counts).",
        f"- Every pull, seconds = c0 + cl x layers + cb x MB (compressed): c0 = {p0:.3f} s, "
        f"cl = {pl:.4f} s per layer, cb = {pb:.3f} s per MB, R² = {pr2:.3f} "
        f"({len(cost.samples)} pulls). The bound below uses this fit.",
        "",
    ]
    return lines


@dataclass(frozen=True)
class Download:
    """What one pull downloads, as the model sees it."""

    layers: int
    size: int  # compressed bytes


def _download(held: Sequence[LayerBlob], wanted: Sequence[LayerBlob], engine: Engine) -> Download:
    """B's layers the engine fetches after A (reused layers cost nothing here: dockerd only
    checks them)."""
    digests = [blob.digest for blob in held], [blob.digest for blob in wanted]
    fetched = [wanted[index] for index in engine.fetched(*digests)]
    return Download(len(fetched), sum(blob.size for blob in fetched))


@dataclass(frozen=True)
class PairModel:
    pair: Pair
    paths: tuple[int, int, int]  # A's closure, B's, both
    downloads: dict[str, tuple[Download, Download]]  # strategy -> A's pull, B's pull


def _one_layer(bench: Workbench, graph: ClosureGraph) -> list[LayerBlob]:
    return [bench.store_layer(sorted(graph.nodes)), bench.symlink_layer(graph.roots)]


def _oracle_layers(
    bench: Workbench, graph: ClosureGraph, shared: list[str], own: set[str]
) -> list[LayerBlob]:
    layers = [bench.store_layer(group) for group in (shared, sorted(own)) if group]
    return [*layers, bench.symlink_layer(graph.roots)]


def _chunked_layers(
    bench: Workbench, graph: ClosureGraph, budget: int, chunk_bytes: int
) -> list[LayerBlob]:
    plan = plan_chunked_layers(graph, {}, budget, chunk_bytes)
    return [*(bench.store_layer(layer.paths) for layer in plan), bench.symlink_layer(graph.roots)]


def model_pairs(scratch: Path, quick: bool, engine: Engine) -> list[PairModel]:
    """The layers each strategy makes for every pair, written by the registry's layer writer
    (real compressed sizes): one layer per image, the default layout, and the per-pair oracle,
    which puts exactly A∩B in one leading layer both images share, so A pays one layer more
    than one layer per image and B downloads only its own paths and its symlink layer. No
    layout downloads fewer bytes for B, nor fewer layers for the pair with B's reuse, while
    keeping the registry's separate symlink layer; a layout is fixed before the pair is known,
    so the oracle bounds every layout from below."""
    pairs = choose_pairs(QUICK_PAIRS if quick else FULL_PAIRS, QUICK_SIZES if quick else SIZES)
    images = sorted({image for pair in pairs for image in (pair.a_image, pair.b_image)})
    bench = Workbench(scratch / "workbench", images)
    models = []
    for pair in pairs:
        closures = bench.closure(pair.a_image), bench.closure(pair.b_image)
        a_paths, b_paths = set(closures[0].nodes), set(closures[1].nodes)
        shared = sorted(a_paths & b_paths)
        strategies = {
            ONE_LAYER: (_one_layer(bench, closures[0]), _one_layer(bench, closures[1])),
            DEFAULT_LAYOUT: (
                bench.image_layers(pair.a_image, DEFAULT_LAYERING, DEFAULT_BUDGET),
                bench.image_layers(pair.b_image, DEFAULT_LAYERING, DEFAULT_BUDGET),
            ),
            ORACLE: (
                _oracle_layers(bench, closures[0], shared, a_paths - b_paths),
                _oracle_layers(bench, closures[1], shared, b_paths - a_paths),
            ),
        }
        for budget, chunk_bytes in sweep(quick):
            strategies[sweep_label(budget, chunk_bytes)] = (
                _chunked_layers(bench, closures[0], budget, chunk_bytes),
                _chunked_layers(bench, closures[1], budget, chunk_bytes),
            )
        models.append(
            PairModel(
                pair,
                (len(a_paths), len(b_paths), len(shared)),
                {
                    label: (
                        _download([], a, engine),
                        _download(a, b, engine),
                    )
                    for label, (a, b) in strategies.items()
                },
            )
        )
    return models


def predicted_total(cost: LayerCost, models: list[PairModel], strategy: str, link: str) -> float:
    """The pairs' total wall time the model predicts: A's pull and B's, every pair."""
    return sum(
        cost.pull_seconds(download.layers, download.size, LINKS[link])
        for model in models
        for download in model.downloads[strategy]
    )


def _beside(predicted: float, measured: float | None) -> str:
    return f"{predicted:.2f}" + ("" if measured is None else f" ({measured:.2f})")


def bound_report(
    cost: LayerCost,
    models: list[PairModel],
    results: Results,
    links: Sequence[str],
    engine: Engine,
) -> list[str]:
    kb = 1000
    c0, cl, cb, _ = cost.plane
    lines = [
        "### What any layout can reach" + _heading_suffix(engine),
        "",
        "Model: a pull takes c0 + cl x (layers downloaded) + cb x (compressed MB downloaded) "
        f"+ (those bytes) / (link rate), with c0 = {c0:.3f} s, cl = {cl:.4f} s and "
        f"cb = {cb:.3f} s per MB, the fit to every loopback pull above (cb: what dockerd spends "
        "on a MB besides the transfer: verifying, decompressing, extracting); a layer B reuses "
        "costs 0. Layers as the registry's layer writer makes "
        "them for each pair (`benchmarks/bench_incremental.Workbench`): *one layer* = each "
        "image's closure in one layer plus its symlink layer, nothing reused; *oracle* = the "
        "best any layout could do for that pair: A = [A∩B, A only, A's symlinks], B = [the same "
        "A∩B layer (reused), B only, B's symlinks], empty layers dropped; the default = "
        f"{DEFAULT_LAYOUT} with {_reuse(engine)}.",
        "",
        "Layers downloaded A + B (kB) per pair:",
        "",
        f"| pair | paths A / B / both | {ONE_LAYER} | {DEFAULT_LAYOUT} | {ORACLE} |",
        "|--:|--:|--:|--:|--:|",
    ]
    for number, model in enumerate(models, 1):
        cells = [
            f"{a.layers} + {b.layers} ({a.size / kb:,.0f} + {b.size / kb:,.0f})"
            for a, b in (model.downloads[s] for s in (ONE_LAYER, DEFAULT_LAYOUT, ORACLE))
        ]
        paths = " / ".join(str(count) for count in model.paths)
        lines.append(f"| {number} | {paths} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Pairs total, s, predicted by the model (measured in this run, where the pairs were "
        "pulled):",
        "",
        f"| link | {ONE_LAYER} | {DEFAULT_LAYOUT} | default / one layer | {ORACLE} "
        f"| oracle / one layer | <= {TARGET_RATIO}x one layer reachable "
        "| best path-determined layout (`chunked` sweep, no popularity data) / one layer |",
        "|---|--:|--:|--:|--:|--:|---|---|",
    ]
    verdicts = []
    for link in links:
        one = predicted_total(cost, models, ONE_LAYER, link)
        default = predicted_total(cost, models, DEFAULT_LAYOUT, link)
        best = predicted_total(cost, models, ORACLE, link)
        swept = {
            label: predicted_total(cost, models, label, link)
            for label in models[0].downloads
            if label.startswith("`chunked` ") and label != DEFAULT_LAYOUT
        }
        best_swept = min(swept, key=lambda label: swept[label])
        measured = {
            label: results[label][link].pairs_seconds
            for label in (ONE_LAYER, DEFAULT_LAYOUT)
            if label in results and link in results[label]
        }

        ratio = f"{default / one:.2f}"
        if len(measured) == 2:
            ratio += f" ({measured[DEFAULT_LAYOUT] / measured[ONE_LAYER]:.2f})"
        reachable = best / one <= TARGET_RATIO
        one_cell = _beside(one, measured.get(ONE_LAYER))
        default_cell = _beside(default, measured.get(DEFAULT_LAYOUT))
        lines.append(
            f"| {link} | {one_cell} | {default_cell} "
            f"| {ratio} | {best:.2f} | {best / one:.2f} | {'**yes**' if reachable else 'no'} "
            f"| {best_swept}: {swept[best_swept] / one:.2f} |"
        )
        verdicts.append(
            f"{link}: "
            + ("the oracle reaches it" if reachable else "no layout reaches it")
            + f", the best path-determined layout {swept[best_swept] / one:.2f}x"
        )
    lines += [
        "",
        f"- Target <= {TARGET_RATIO}x one layer, by the model: " + "; ".join(verdicts) + ".",
        "",
    ]
    return lines


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _reuse(engine: Engine) -> str:
    if engine.content_addressed:
        return "content-addressed reuse (B's layers whose digests A lists)"
    return "chain-prefix reuse (B's leading layers identical to A's)"


def run(quick: bool, cost_only: bool = False, engine_name: str = DEFAULT_ENGINE) -> str:
    """The whole section; `cost_only`: the per-layer cost and the bound, with the pairs of the
    two layouts the bound compares the model with (no fresh pulls, no other layouts)."""
    engine = ENGINES[engine_name]
    if engine_name == DEFAULT_ENGINE and not docker_available():
        raise RuntimeError("dockerd is not installed (scripts/setup-system --test)")
    if engine_name != DEFAULT_ENGINE and not engines_available():
        raise RuntimeError("mmdebstrap is not installed (scripts/setup-system --test)")
    layouts = [
        layout
        for layout in LAYOUTS
        if (layout.quick or not quick)
        and (not cost_only or layout.label in (DEFAULT_LAYOUT, ONE_LAYER))
    ]
    with tempfile.TemporaryDirectory(prefix="nixery-bench-docker-") as name:
        results = measure_layouts(
            Path(name) / "layouts", layouts, quick, engine, fresh_pulls=not cost_only
        )
        cost = measure_layer_cost(Path(name) / "cost", quick, engine)
        models = model_pairs(Path(name) / "bound", quick, engine)
    links = [link for link in LINKS if not quick or link in QUICK_LINKS]
    return "\n".join(
        [
            report(results, quick, engine, fresh_pulls=not cost_only),
            *cost_report(cost, engine),
            *bound_report(cost, models, results, links, engine),
        ]
    )


def _cell(pull: Pull | None) -> str:
    return "-" if pull is None else f"{pull.seconds:.2f} ({pull.layers})"


def report(results: Results, quick: bool, engine: Engine, fresh_pulls: bool = True) -> str:
    labels = list(results)
    links = [link for link in LINKS if any(link in results[label] for label in labels)]
    lines = [
        "## Docker pulls" + _heading_suffix(engine),
        "",
        f"A fresh private {engine.label} per pull series, `nixery serve` on loopback, "
        "images built before timing; the layouts interleaved (each image or pair pulled with "
        "every layout in turn, in rotated order, before the next). Seconds of `docker pull` wall "
        "time; layers as the manifest lists them. Links: loopback, and a throttling proxy on 127.0.0.1 "
        "(`benchmarks/_throttle.py`) whose connections share the stated rate (no added "
        "latency). `chunked` N = `NIXERY_LAYERING=chunked NIXERY_LAYER_BUDGET=N`; one layer = "
        "`NIXERY_LAYERING=prefix NIXERY_LAYER_BUDGET=1`; `nixery` and `per-path` at budget 94. "
        "`per-path` (the previous default) is pulled on loopback only."
        + (" **Quick mode**: one small pair, loopback and 100 Mbit/s." if quick else "")
        + ("" if fresh_pulls else " **Cost only**: the pairs of the two layouts below."),
    ]
    if fresh_pulls and fresh_images(quick):
        lines += [
            "",
            "Fresh pulls, s (layers):",
            "",
            "| image | link | " + " | ".join(labels) + " |",
            "|---|---|" + "--:|" * len(labels),
        ]
        for image, _ in fresh_images(quick):
            for link in links:
                cells = [
                    _cell(results[label][link].fresh[image] if link in results[label] else None)
                    for label in labels
                ]
                lines.append(f"| {image} | {link} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Incremental pairs (the first pairs of `Incremental pulls`): A then B on one fresh "
        "dockerd, A s / B s (B's layers dockerd reused, those it did not fetch by the "
        f"registry's access log / the count predicted from the manifests by {_reuse(engine)}).",
        "",
        "| pair | link | " + " | ".join(labels) + " |",
        "|--:|---|" + "--:|" * len(labels),
    ]
    mismatches = 0
    pair_count = len(results[labels[0]][LOOPBACK].pairs)
    for number in range(pair_count):
        for link in links:
            cells = []
            for label in labels:
                if link not in results[label]:
                    cells.append("-")
                    continue
                pair = results[label][link].pairs[number]
                reused = pair.b.layers - pair.b_fetched
                mismatches += reused != pair.b_predicted
                cells.append(
                    f"{pair.a.seconds:.2f} / {pair.b.seconds:.2f} ({reused} / {pair.b_predicted})"
                )
            lines.append(f"| {number + 1} | {link} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Pairs total, s (vs the default on the same link):",
        "",
        "| layout | " + " | ".join(links) + " |",
        "|---|" + "--:|" * len(links),
    ]
    for label in labels:
        cells = []
        for link in links:
            if link not in results[label]:
                cells.append("-")
                continue
            total = results[label][link].pairs_seconds
            default = results[DEFAULT_LAYOUT][link].pairs_seconds
            cells.append(f"{total:.2f} ({total / default:.2f}x)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for link in links:
        default = results[DEFAULT_LAYOUT][link].pairs_seconds
        verdicts = []
        for anchor in ANCHORS:
            if anchor not in results or link not in results[anchor]:
                continue
            ratio = default / results[anchor][link].pairs_seconds
            met = "met" if ratio <= TARGET_RATIO else "**not met**"
            verdicts.append(f"{ratio:.2f}x {anchor} ({met})")
        lines.append(
            f"- Target, {link}: default pairs total <= {TARGET_RATIO}x `nixery` and one layer: "
            + ", ".join(verdicts)
            + "."
        )
    lines.append(
        f"- The {'content-addressed' if engine.content_addressed else 'chain-prefix'} count "
        "validated against what dockerd pulled: "
        + ("every pair agrees." if mismatches == 0 else f"**{mismatches} pulls disagree**.")
    )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="one pair, 3 layouts, loopback and 100 Mbit/s (CI)"
    )
    parser.add_argument(
        "--cost-only",
        action="store_true",
        help="the per-layer cost and the bound, with the pairs of the default and one layer only",
    )
    parser.add_argument(
        "--engine",
        choices=sorted(ENGINES),
        default=DEFAULT_ENGINE,
        help="Debian 12's dockerd, or sid's with overlay2 or the containerd image store",
    )
    args = parser.parse_args()
    print(run(args.quick, args.cost_only, args.engine))


if __name__ == "__main__":
    main()
