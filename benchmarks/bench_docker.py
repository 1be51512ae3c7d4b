"""Pulls by a real dockerd (Debian's 20.10, overlay2): fresh pulls and the incremental pairs.

    python -m benchmarks.bench_docker [--quick]

For each layout, `nixery serve` runs with it on fresh storage, every image is built once
before any timing (a pull times the client, not the build), and a fresh private dockerd
(`tests/daemons.py`) pulls:

- fresh: the 1- and 10-package images of the generated family and `syntheticall` (the whole
  family, 300+ paths: 100 package names do not fit the 255-character name limit);
- each incremental pair of `bench_incremental`: A, then B, on one dockerd per pair, timed
  separately. The layers dockerd reports as "Already exists" for B are checked against the
  chain-prefix count of the manifests (B's leading layers identical to A's).

Layouts: the default (`per-path`), the prefix-stable order (`prefix`), Nixery's grouping
(`nixery`) and one layer per image (`prefix` with budget 1: one store layer plus the symlink
layer). Target, in one run: the
pairs' total wall time (A and B pulls together) of the default <= 0.8x that of each other.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks._serving import start_nixery
from benchmarks.bench_incremental import QUICK_SIZES, SIZES, choose_pairs, family_name
from nixery.build.layering import DEFAULT_BUDGET, DEFAULT_LAYERING
from tests.daemons import Dockerd, docker_available

TARGET_RATIO = 0.8
FULL_PAIRS = 8
LAYOUTS: dict[str, dict[str, str]] = {
    f"`{DEFAULT_LAYERING}` (default)": {
        "NIXERY_LAYERING": DEFAULT_LAYERING,
        "NIXERY_LAYER_BUDGET": str(DEFAULT_BUDGET),
    },
    "`prefix`": {"NIXERY_LAYERING": "prefix", "NIXERY_LAYER_BUDGET": str(DEFAULT_BUDGET)},
    "`nixery`": {"NIXERY_LAYERING": "nixery", "NIXERY_LAYER_BUDGET": str(DEFAULT_BUDGET)},
    "one layer": {"NIXERY_LAYERING": "prefix", "NIXERY_LAYER_BUDGET": "1"},
}
DEFAULT_LAYOUT = next(iter(LAYOUTS))


def fresh_images(quick: bool) -> list[tuple[str, str]]:
    """(label, image name)"""
    images = [("1 package", family_name(7))]
    if not quick:
        images += [
            ("10 packages", "/".join(family_name(i * 29 % 300) for i in range(10))),
            ("syntheticall (300+ paths)", "syntheticall"),
        ]
    return images


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


def _layer_digests(host_port: str, image: str) -> list[str]:
    raw = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{host_port}/{image}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    ).stdout
    return [layer["digest"] for layer in json.loads(raw)["layers"]]


def _chain_prefix(held: list[str], wanted: list[str]) -> int:
    shared = 0
    for have, want in zip(held, wanted, strict=False):
        if have != want:
            break
        shared += 1
    return shared


@dataclass(frozen=True)
class LayoutResult:
    fresh: dict[str, Pull]
    pairs: list[tuple[Pull, Pull, int]]  # A, B, chain-prefix layers predicted from manifests


def measure_layout(scratch: Path, env: dict[str, str], quick: bool) -> LayoutResult:
    pairs = choose_pairs(2 if quick else FULL_PAIRS, QUICK_SIZES if quick else SIZES)
    server = start_nixery(scratch, env)
    try:
        images = [image for _, image in fresh_images(quick)]
        images += [image for pair in pairs for image in (pair.a_image, pair.b_image)]
        digests = {image: _layer_digests(server.host_port, image) for image in images}
        fresh: dict[str, Pull] = {}
        for label, image in fresh_images(quick):
            with Dockerd(scratch / "docker") as docker:
                fresh[label] = _pull(docker, f"{server.host_port}/{image}")
        results = []
        for pair in pairs:
            with Dockerd(scratch / "docker") as docker:
                first = _pull(docker, f"{server.host_port}/{pair.a_image}")
                second = _pull(docker, f"{server.host_port}/{pair.b_image}")
            predicted = _chain_prefix(digests[pair.a_image], digests[pair.b_image])
            results.append((first, second, predicted))
        return LayoutResult(fresh, results)
    finally:
        server.stop()


def run(quick: bool) -> str:
    if not docker_available():
        raise RuntimeError("dockerd is not installed (scripts/setup-system --test)")
    results: dict[str, LayoutResult] = {}
    with tempfile.TemporaryDirectory(prefix="nixery-bench-docker-") as name:
        for number, (label, env) in enumerate(LAYOUTS.items()):
            results[label] = measure_layout(Path(name) / str(number), env, quick)
    return report(results, quick)


def report(results: dict[str, LayoutResult], quick: bool) -> str:
    labels = list(results)
    lines = [
        "## Docker pulls",
        "",
        "A fresh private dockerd 20.10 (overlay2) per pull series, `nixery serve` on loopback, "
        "images built before timing. Seconds of `docker pull` wall time; layers as dockerd "
        "listed them. One layer = `NIXERY_LAYERING=prefix NIXERY_LAYER_BUDGET=1`."
        + (" **Quick mode**: one image, 2 small pairs." if quick else ""),
        "",
        "Fresh pulls:",
        "",
        "| image | " + " | ".join(f"{label} s (layers)" for label in labels) + " |",
        "|---|" + "--:|" * len(labels),
    ]
    for image, _ in fresh_images(quick):
        cells = [
            f"{results[label].fresh[image].seconds:.2f} ({results[label].fresh[image].layers})"
            for label in labels
        ]
        lines.append(f"| {image} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Incremental pairs (the first pairs of `Incremental pulls`): A then B on one fresh "
        'dockerd; B\'s "Already exists" layers against the chain-prefix count from the '
        "manifests.",
        "",
        "| pair | "
        + " | ".join(f"{label}: A s / B s (reused / predicted)" for label in labels)
        + " |",
        "|--:|" + "--:|" * len(labels),
    ]
    mismatches = 0
    for number in range(len(results[labels[0]].pairs)):
        cells = []
        for label in labels:
            first, second, predicted = results[label].pairs[number]
            mismatches += second.already_existed != predicted
            cells.append(
                f"{first.seconds:.2f} / {second.seconds:.2f} ({second.already_existed} / {predicted})"
            )
        lines.append(f"| {number + 1} | " + " | ".join(cells) + " |")
    totals = {
        label: sum(a.seconds + b.seconds for a, b, _ in results[label].pairs) for label in labels
    }
    lines += ["", "| layout | pairs total s | vs default |", "|---|--:|--:|"]
    for label in labels:
        lines.append(
            f"| {label} | {totals[label]:.2f} | {totals[label] / totals[DEFAULT_LAYOUT]:.2f}x |"
        )
    lines.append("")
    for label in ("`nixery`", "one layer"):
        ratio = totals[DEFAULT_LAYOUT] / totals[label]
        verdict = "met" if ratio <= TARGET_RATIO else "**not met**"
        lines.append(
            f"- Target: default pairs total <= {TARGET_RATIO}x {label}: {ratio:.2f}x, {verdict}."
        )
    lines.append(
        '- Chain-prefix count validated against dockerd\'s "Already exists": '
        + ("every pair agrees." if mismatches == 0 else f"**{mismatches} pulls disagree**.")
    )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one image, 2 small pairs (CI)")
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
