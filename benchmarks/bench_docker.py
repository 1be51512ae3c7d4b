"""Pulls by a real dockerd (Debian's 20.10, overlay2): fresh pulls and the incremental pairs,
on loopback and over bandwidth-limited links.

    python -m benchmarks.bench_docker [--quick]

For each layout, `nixery serve` runs with it on fresh storage, every image is built once
before any timing (a pull times the client, not the build), and for each link a fresh private
dockerd (`tests/daemons.py`) pulls:

- fresh: the 1- and 10-package images of the generated family and `syntheticall` (the whole
  family, 300+ paths: 100 package names do not fit the 255-character name limit);
- each incremental pair of `bench_incremental`: A, then B, on one dockerd per pair, timed
  separately. The layers dockerd reports as "Already exists" for B are checked against the
  chain-prefix count of the manifests (B's leading layers identical to A's).

Links: loopback (dockerd talks to `nixery serve` directly), and `benchmarks/_throttle.py`'s
proxy at 100 and 20 Mbit/s shared by all of a pull's connections (no added latency).

Layouts: the default, the chunked grouping at other budgets, Nixery's grouping (`nixery`),
one layer per image (`prefix` with budget 1: one store layer plus the symlink layer), and the
previous default `per-path` (loopback only: about 0.1 s per layer makes it the slowest by far,
measured before). Target, in one run and per link: the pairs' total wall time (A and B pulls
together) of the default <= 0.8x that of `nixery` and of one layer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks._serving import start_nixery
from benchmarks._throttle import ThrottledLink
from benchmarks.bench_incremental import QUICK_SIZES, SIZES, choose_pairs, family_name
from nixery.build.layering import DEFAULT_BUDGET, DEFAULT_LAYERING
from tests.daemons import Dockerd, docker_available

TARGET_RATIO = 0.8
FULL_PAIRS = 8
QUICK_PAIRS = 1
LOOPBACK = "loopback"
# Link label -> bits per second (None: dockerd talks to nixery serve directly).
LINKS: dict[str, float | None] = {LOOPBACK: None, "100 Mbit/s": 100e6, "20 Mbit/s": 20e6}
QUICK_LINKS = (LOOPBACK, "100 Mbit/s")
CHUNKED_BUDGETS = (4, 8, 16, 24)


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
        _layout("prefix", 1, "one layer", ALL_LINKS, True),
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
ANCHORS = ("`nixery`", "one layer")


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
    layers: int
    already_existed: int


def _pull(docker: Dockerd, ref: str) -> Pull:
    started = time.monotonic()
    result = docker.run("pull", ref)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"docker pull {ref} failed: {result.stderr}")
    lines = result.stdout.splitlines()
    existed = sum(line.endswith("Already exists") for line in lines)
    done = sum(line.endswith("Pull complete") for line in lines)
    return Pull(seconds, existed + done, existed)


@dataclass(frozen=True)
class ManifestLayer:
    digest: str
    size: int  # compressed bytes


def _manifest_layers(host_port: str, image: str) -> list[ManifestLayer]:
    """The layers of the image's manifest; fetching it makes `nixery serve` build the image."""
    raw = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{host_port}/{image}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    ).stdout
    return [ManifestLayer(layer["digest"], layer["size"]) for layer in json.loads(raw)["layers"]]


def _layer_digests(host_port: str, image: str) -> list[str]:
    return [layer.digest for layer in _manifest_layers(host_port, image)]


def _chain_prefix(held: list[str], wanted: list[str]) -> int:
    shared = 0
    for have, want in zip(held, wanted, strict=False):
        if have != want:
            break
        shared += 1
    return shared


@dataclass(frozen=True)
class LinkResult:
    fresh: dict[str, Pull]
    pairs: list[tuple[Pull, Pull, int]]  # A, B, chain-prefix layers predicted from manifests

    @property
    def pairs_seconds(self) -> float:
        return sum(a.seconds + b.seconds for a, b, _ in self.pairs)


@contextlib.contextmanager
def _link(label: str, port: int) -> Iterator[str]:
    """The registry's host:port as dockerd reaches it over the link."""
    rate = LINKS[label]
    if rate is None:
        yield f"127.0.0.1:{port}"
        return
    with ThrottledLink(port, rate) as link:
        yield link.host_port


def measure_layout(scratch: Path, layout: Layout, quick: bool) -> dict[str, LinkResult]:
    """Link label -> its pulls."""
    pairs = choose_pairs(QUICK_PAIRS if quick else FULL_PAIRS, QUICK_SIZES if quick else SIZES)
    links = [link for link in layout.links if not quick or link in QUICK_LINKS]
    started = time.monotonic()
    server = start_nixery(scratch, layout.env)
    try:
        images = [image for _, image in fresh_images(quick)]
        images += [image for pair in pairs for image in (pair.a_image, pair.b_image)]
        digests = {image: _layer_digests(server.host_port, image) for image in images}
        _progress(f"{layout.label}: serving and built in {time.monotonic() - started:.1f} s")
        results = {}
        for link in links:
            started = time.monotonic()
            with _link(link, server.port) as host_port:
                fresh: dict[str, Pull] = {}
                for label, image in fresh_images(quick):
                    with Dockerd(scratch / "docker") as docker:
                        fresh[label] = _pull(docker, f"{host_port}/{image}")
                pulled = []
                for pair in pairs:
                    with Dockerd(scratch / "docker") as docker:
                        first = _pull(docker, f"{host_port}/{pair.a_image}")
                        second = _pull(docker, f"{host_port}/{pair.b_image}")
                    predicted = _chain_prefix(digests[pair.a_image], digests[pair.b_image])
                    pulled.append((first, second, predicted))
            results[link] = LinkResult(fresh, pulled)
            _progress(f"{layout.label}, {link}: pulled in {time.monotonic() - started:.1f} s")
        return results
    finally:
        server.stop()


COST_BUDGETS = (1, 4, 16, 48)
QUICK_COST_BUDGETS = (1, 8)
COST_ROUNDS = 3
QUICK_COST_ROUNDS = 1


def cost_image(quick: bool) -> str:
    """The fresh 10-package image; 3 packages in quick mode (fewer paths to build and pull)."""
    return _spread_family(3 if quick else 10)


@dataclass(frozen=True)
class CostSample:
    budget: int
    round: int
    layers: int  # as dockerd listed them; checked against the manifest
    seconds: float


@dataclass(frozen=True)
class LayerCost:
    """`seconds = c0 + cl x layers`, fitted to fresh pulls of one image at several budgets."""

    image: str
    built: dict[int, tuple[int, int]]  # budget -> manifest layers, compressed layer bytes
    samples: list[CostSample]
    c0: float
    cl: float
    r2: float

    def pull_seconds(self, layers: int, size: int, bits_per_second: float | None) -> float:
        """The model's pull: fixed cost, per-layer cost, and the bytes at the link's rate. On
        loopback the bytes cost nothing beyond what c0 and cl already hold."""
        transfer = 0.0 if bits_per_second is None else size * 8 / bits_per_second
        return self.c0 + self.cl * layers + transfer


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least squares `y = c0 + cl x`: (c0, cl, R²)."""
    cl, c0 = statistics.linear_regression(xs, ys)
    mean = statistics.fmean(ys)
    total = sum((y - mean) ** 2 for y in ys)
    residual = sum((y - c0 - cl * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return c0, cl, 1.0 - residual / total if total > 0 else 1.0


def _remove_image(docker: Dockerd, ref: str) -> None:
    """Delete the image and its layers, so the next pull of any budget downloads every layer."""
    for args in (("rmi", ref), ("image", "prune", "-af")):
        result = docker.run(*args)
        if result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr}")
    left = docker.run("images", "-qa").stdout.strip()
    if left:
        raise RuntimeError(f"images left after docker rmi {ref}: {left}")


def measure_layer_cost(scratch: Path, quick: bool) -> LayerCost:
    """Fresh loopback pulls of one image at each budget of the prefix grouping: the same store
    paths in 1 to L store layers (plus the symlink layer), so the layer count is what varies.
    One dockerd for the whole series (a fresh one per pull would time its start-up caches
    differently), the image removed after each pull; rounds rotate the order so drift in the
    shared machine's load spreads over every budget."""
    budgets = QUICK_COST_BUDGETS if quick else COST_BUDGETS
    rounds = QUICK_COST_ROUNDS if quick else COST_ROUNDS
    image = cost_image(quick)
    servers = {}
    try:
        built: dict[int, tuple[int, int]] = {}
        for budget in budgets:
            started = time.monotonic()
            servers[budget] = start_nixery(
                scratch / f"cost-{budget}",
                {"NIXERY_LAYERING": "prefix", "NIXERY_LAYER_BUDGET": str(budget)},
            )
            layers = _manifest_layers(servers[budget].host_port, image)
            built[budget] = (len(layers), sum(layer.size for layer in layers))
            _progress(
                f"per-layer cost, budget {budget}: {len(layers)} layers, "
                f"built in {time.monotonic() - started:.1f} s"
            )
        samples = []
        with Dockerd(scratch / "cost-docker") as docker:
            for number in range(rounds):
                for budget in budgets[number % len(budgets) :] + budgets[: number % len(budgets)]:
                    ref = f"{servers[budget].host_port}/{image}"
                    pull = _pull(docker, ref)
                    if pull.already_existed or pull.layers != built[budget][0]:
                        raise RuntimeError(
                            f"budget {budget}: {pull.layers} layers pulled, "
                            f"{pull.already_existed} already existed; the manifest lists "
                            f"{built[budget][0]}: not a fresh pull"
                        )
                    samples.append(CostSample(budget, number + 1, pull.layers, pull.seconds))
                    _remove_image(docker, ref)
        _progress(f"per-layer cost: {len(samples)} pulls")
    finally:
        for server in servers.values():
            server.stop()
    c0, cl, r2 = fit_line(
        [float(sample.layers) for sample in samples], [sample.seconds for sample in samples]
    )
    return LayerCost(image, built, samples, c0, cl, r2)


def cost_report(cost: LayerCost) -> list[str]:
    lines = [
        "### Per-layer cost",
        "",
        f"Fresh loopback pulls of `{cost.image}` served by one `nixery serve` per budget L "
        "(`NIXERY_LAYERING=prefix NIXERY_LAYER_BUDGET=L`: the same store paths in up to L "
        "layers, plus the symlink layer), on one dockerd, the image and its layers removed "
        "(`docker rmi`, `docker image prune -af`) after each pull; no pull found a layer "
        f"already there. {len({sample.round for sample in cost.samples})} round(s), each "
        "pulling every L once in rotated order.",
        "",
        "| L | layers | compressed kB | pulls, s |",
        "|--:|--:|--:|---|",
    ]
    for budget, (layers, size) in cost.built.items():
        seconds = [f"{s.seconds:.2f}" for s in cost.samples if s.budget == budget]
        lines.append(f"| {budget} | {layers} | {size / 1000:,.0f} | {', '.join(seconds)} |")
    lines += [
        "",
        f"Least squares, seconds = c0 + cl x layers: **c0 = {cost.c0:.3f} s, "
        f"cl = {cost.cl:.4f} s per layer**, R² = {cost.r2:.3f} "
        f"({len(cost.samples)} pulls, "
        f"{len({sample.layers for sample in cost.samples})} distinct layer counts).",
        "",
    ]
    return lines


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


Results = dict[str, dict[str, LinkResult]]  # layout label -> link label -> pulls


def run(quick: bool) -> str:
    if not docker_available():
        raise RuntimeError("dockerd is not installed (scripts/setup-system --test)")
    results: Results = {}
    with tempfile.TemporaryDirectory(prefix="nixery-bench-docker-") as name:
        for number, layout in enumerate(LAYOUTS):
            if quick and not layout.quick:
                continue
            results[layout.label] = measure_layout(Path(name) / str(number), layout, quick)
    return report(results, quick)


def _cell(pull: Pull | None) -> str:
    return "-" if pull is None else f"{pull.seconds:.2f} ({pull.layers})"


def report(results: Results, quick: bool) -> str:
    labels = list(results)
    links = [link for link in LINKS if any(link in results[label] for label in labels)]
    lines = [
        "## Docker pulls",
        "",
        "A fresh private dockerd 20.10 (overlay2) per pull series, `nixery serve` on loopback, "
        "images built before timing. Seconds of `docker pull` wall time; layers as dockerd "
        "listed them. Links: loopback, and a throttling proxy on 127.0.0.1 "
        "(`benchmarks/_throttle.py`) whose connections share the stated rate (no added "
        "latency). `chunked` N = `NIXERY_LAYERING=chunked NIXERY_LAYER_BUDGET=N`; one layer = "
        "`NIXERY_LAYERING=prefix NIXERY_LAYER_BUDGET=1`; `nixery` and `per-path` at budget 94. "
        "`per-path` (the previous default) is pulled on loopback only."
        + (" **Quick mode**: one small pair, loopback and 100 Mbit/s." if quick else ""),
    ]
    if fresh_images(quick):
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
        "dockerd, A s / B s (B's layers dockerd reused / the chain-prefix count predicted from "
        "the manifests).",
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
                first, second, predicted = results[label][link].pairs[number]
                mismatches += second.already_existed != predicted
                cells.append(
                    f"{first.seconds:.2f} / {second.seconds:.2f} "
                    f"({second.already_existed} / {predicted})"
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
        '- Chain-prefix count validated against dockerd\'s "Already exists": '
        + ("every pair agrees." if mismatches == 0 else f"**{mismatches} pulls disagree**.")
    )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="one pair, 3 layouts, loopback and 100 Mbit/s (CI)"
    )
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
