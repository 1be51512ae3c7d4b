"""Incremental pulls: what a client holding image A downloads to pull an overlapping image B.

    python -m benchmarks.bench_incremental [--quick]

Images are drawn from the generated family of the test package set (`tests/pkgs/synthetic.nix`,
`synthetic.p000` .. `synthetic.p299`, plus the `cacert` and `iana-etc` every image gets). The
pairs are fixed by a seed: A is k packages (k from 2 to 14; B at most 17, the most an image name can hold), B is A with up to two packages
removed and one to three added.

Every layer is written by the registry's own layer writer (`nixery.build.layers`) from the real store
paths, so sizes are compressed bytes as served; the plan is `plan_layers` or
`plan_per_path_layers` with no popularity data (the default) and the default budget
(`DEFAULT_BUDGET`, NIXERY_LAYER_BUDGET's default) of store path layers, plus the image's symlink
layer, exactly as `ImageBuilder` does.

- downloaded: the compressed sizes of B's layers whose digests A's manifest does not list;
- ideal: each store path B has and A lacks, tarred and compressed alone by the same writer,
  plus B's symlink layer (no grouping can send less without compressing paths together);
- ideal, together: the same paths compressed as one stream (what a perfect grouping of B's new
  paths into one layer would send; below the per-path ideal by the per-layer tar and gzip
  overhead);
- one layer per image: B's whole closure as one layer, plus its symlink layer.

Under the default budget no image of these pairs needs merging (B holds at most 17 family
members, the most a 255-character image name can name, under 95 store paths), so the full run
also uses a budget of 24, where both groupings must merge, to show how each degrades.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks._serving import OFFLINE_NIX_CONFIG, TEST_PKGS
from nixery.build.contract import NixSource
from nixery.build.graph import ClosureGraph
from nixery.build.layering import DEFAULT_BUDGET, DEFAULT_LAYERING, LAYERINGS, PLANNERS
from nixery.build.layers import LayerBlob, write_store_layer, write_symlink_layer
from nixery.build.nix import Nix
from nixery.config import Layering, find_nix_dir
from nixery.registry.names import parse_image_name
from nixery.storage.filesystem import FilesystemStorage

FAMILY_SIZE = 300
SEED = 20261127
PAIR_COUNT = 24
QUICK_PAIR_COUNT = 3
# Image names are at most 255 characters: 17 family members ("synthetic.pNNN/" each) at most.
SIZES = (2, 4, 7, 10, 14)
QUICK_SIZES = (2, 3)
TARGET_MEDIAN_EXCESS = 1.3
TIGHT_BUDGET = 24


def family_name(index: int) -> str:
    return f"synthetic.p{index:03d}"


@dataclass(frozen=True)
class Pair:
    a: tuple[str, ...]  # image names: package components joined by "/"
    b: tuple[str, ...]

    @property
    def a_image(self) -> str:
        return "/".join(self.a)

    @property
    def b_image(self) -> str:
        return "/".join(self.b)


def choose_pairs(count: int, sizes: Sequence[int], seed: int = SEED) -> list[Pair]:
    rng = random.Random(seed)
    pairs = []
    for number in range(count):
        size = sizes[number % len(sizes)]
        a = rng.sample(range(FAMILY_SIZE), size)
        removed = set(rng.sample(a, min(number % 3, size - 1)))
        added = rng.sample(sorted(set(range(FAMILY_SIZE)) - set(a)), 1 + (number // 3) % 3)
        b = [index for index in a if index not in removed] + added
        pairs.append(
            Pair(tuple(family_name(i) for i in sorted(a)), tuple(family_name(i) for i in sorted(b)))
        )
    return pairs


class Workbench:
    """The closure of any image of the family, and its layers as the registry writes them."""

    def __init__(self, scratch: Path, images: Iterable[str]) -> None:
        os.environ.setdefault("NIX_CONFIG", OFFLINE_NIX_CONFIG)
        self.storage = FilesystemStorage(scratch / "blobs")
        self._blobs: dict[tuple[str, ...], LayerBlob] = {}
        requests = [parse_image_name(image) for image in images]
        names = sorted({name for request in requests for name in request.packages})
        nix = Nix(find_nix_dir(), scratch / "gcroots", timeout=3600)
        inputs = nix.build_image_inputs(NixSource("path", str(TEST_PKGS)), names, "x86_64-linux")
        if inputs.graph is None:
            raise RuntimeError(f"not in the test package set: {inputs.resolution.not_found}")
        self._graph = inputs.graph
        self._outputs = {
            package.name: tuple(package.outputs.values()) for package in inputs.resolution.packages
        }

    def closure(self, image: str) -> ClosureGraph:
        request = parse_image_name(image)
        roots = sorted({path for name in request.packages for path in self._outputs[name]})
        seen = set(roots)
        queue = list(roots)
        for path in queue:  # grows while iterating: breadth-first over references
            for ref in self._graph.nodes[path].references:
                if ref not in seen:
                    seen.add(ref)
                    queue.append(ref)
        return ClosureGraph(tuple(roots), {path: self._graph.nodes[path] for path in sorted(seen)})

    def store_layer(self, paths: Sequence[str]) -> LayerBlob:
        key = ("store", *paths)
        if key not in self._blobs:
            self._blobs[key] = write_store_layer(paths, self.storage)
        return self._blobs[key]

    def symlink_layer(self, roots: Sequence[str]) -> LayerBlob:
        key = ("symlinks", *roots)
        if key not in self._blobs:
            self._blobs[key] = write_symlink_layer(roots, self.storage)
        return self._blobs[key]

    def image_layers(
        self, image: str, layering: Layering, budget: int = DEFAULT_BUDGET
    ) -> list[LayerBlob]:
        """The layers of the image's manifest, in order, as `ImageBuilder` makes them."""
        graph = self.closure(image)
        plan = PLANNERS[layering](graph, {}, budget)
        with ThreadPoolExecutor(2) as pool:
            blobs = list(pool.map(lambda layer: self.store_layer(layer.paths), plan))
        return [*blobs, self.symlink_layer(graph.roots)]

    def ideal_bytes(self, have: str, want: str) -> tuple[int, int]:
        """B's new paths each compressed alone, and all compressed together (+ B's symlinks)."""
        held = set(self.closure(have).nodes)
        graph = self.closure(want)
        new = [path for path in graph.nodes if path not in held]
        with ThreadPoolExecutor(2) as pool:
            sizes = list(pool.map(lambda path: self.store_layer([path]).size, new))
        links = self.symlink_layer(graph.roots).size
        together = self.store_layer(new).size if new else 0
        return sum(sizes) + links, together + links

    def one_layer_bytes(self, image: str) -> int:
        graph = self.closure(image)
        return self.store_layer(sorted(graph.nodes)).size + self.symlink_layer(graph.roots).size


def downloaded_bytes(held: Sequence[LayerBlob], wanted: Sequence[LayerBlob]) -> int:
    have = {blob.digest for blob in held}
    return sum(
        blob.size
        for blob in {blob.digest: blob for blob in wanted}.values()
        if blob.digest not in have
    )


@dataclass(frozen=True)
class Outcome:
    pair: Pair
    paths_a: int
    paths_b: int
    new_paths: int
    ideal: int
    ideal_together: int
    one_layer: int
    downloaded: dict[Layering, int]
    layers_a: dict[Layering, int]
    layers_b: dict[Layering, int]

    def excess(self, layering: Layering) -> float:
        return self.downloaded[layering] / self.ideal


def measure(quick: bool) -> dict[int, list[Outcome]]:
    """Layer budget -> the outcome of every pair."""
    budgets: tuple[int, ...]
    if quick:
        pairs, budgets = choose_pairs(QUICK_PAIR_COUNT, QUICK_SIZES), (DEFAULT_BUDGET,)
    else:
        pairs, budgets = choose_pairs(PAIR_COUNT, SIZES), (DEFAULT_BUDGET, TIGHT_BUDGET)
    images = sorted({image for pair in pairs for image in (pair.a_image, pair.b_image)})
    with tempfile.TemporaryDirectory(prefix="nixery-bench-incremental-") as name:
        bench = Workbench(Path(name), images)
        return {budget: [_outcome(bench, pair, budget) for pair in pairs] for budget in budgets}


def _outcome(bench: Workbench, pair: Pair, budget: int) -> Outcome:
    downloaded: dict[Layering, int] = {}
    layers_a: dict[Layering, int] = {}
    layers_b: dict[Layering, int] = {}
    for layering in LAYERINGS:
        held = bench.image_layers(pair.a_image, layering, budget)
        wanted = bench.image_layers(pair.b_image, layering, budget)
        downloaded[layering] = downloaded_bytes(held, wanted)
        layers_a[layering], layers_b[layering] = len(held), len(wanted)
    closure_a = bench.closure(pair.a_image).nodes
    closure_b = bench.closure(pair.b_image).nodes
    ideal, together = bench.ideal_bytes(pair.a_image, pair.b_image)
    return Outcome(
        pair=pair,
        paths_a=len(closure_a),
        paths_b=len(closure_b),
        new_paths=len(set(closure_b) - set(closure_a)),
        ideal=ideal,
        ideal_together=together,
        one_layer=bench.one_layer_bytes(pair.b_image),
        downloaded=downloaded,
        layers_a=layers_a,
        layers_b=layers_b,
    )


def _short(names: Sequence[str]) -> str:
    indices = [name.removeprefix("synthetic.p") for name in names]
    return " ".join(indices) if len(indices) <= 4 else f"{len(indices)} pkgs"


def _change(pair: Pair) -> str:
    removed = sorted(set(pair.a) - set(pair.b))
    added = sorted(set(pair.b) - set(pair.a))
    parts = [f"+{name.removeprefix('synthetic.p')}" for name in added]
    parts += [f"-{name.removeprefix('synthetic.p')}" for name in removed]
    return " ".join(parts)


def _pair_table(outcomes: list[Outcome]) -> list[str]:
    kb = 1000
    lines = [
        "| A | B vs A | paths A/B (new) | ideal kB (together) | one layer kB (excess) "
        + " ".join(f"| `{layering}` kB (excess) | layers" for layering in LAYERINGS)
        + " |",
        "|---|---|--:|--:|--:" + "|--:|--:" * len(LAYERINGS) + "|",
    ]
    for outcome in outcomes:
        cells = [
            _short(outcome.pair.a),
            _change(outcome.pair),
            f"{outcome.paths_a}/{outcome.paths_b} ({outcome.new_paths})",
            f"{outcome.ideal / kb:,.0f} ({outcome.ideal_together / kb:,.0f})",
            f"{outcome.one_layer / kb:,.0f} ({outcome.one_layer / outcome.ideal:.2f})",
        ]
        for layering in LAYERINGS:
            cells.append(
                f"{outcome.downloaded[layering] / kb:,.0f} ({outcome.excess(layering):.2f})"
            )
            cells.append(f"{outcome.layers_a[layering]} -> {outcome.layers_b[layering]}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _summary_rows(budget: int, outcomes: list[Outcome]) -> list[str]:
    one_layer = [outcome.one_layer / outcome.ideal for outcome in outcomes]
    together = [outcome.ideal_together / outcome.ideal for outcome in outcomes]
    rows = [
        f"| {budget} | ideal, paths compressed together | {statistics.median(together):.2f} "
        f"| {max(together):.2f} | - | - |",
        f"| {budget} | one layer per image | {statistics.median(one_layer):.2f} "
        f"| {max(one_layer):.2f} | 2 | - |",
    ]
    for layering in LAYERINGS:
        excess = [outcome.excess(layering) for outcome in outcomes]
        most = max(max(o.layers_a[layering], o.layers_b[layering]) for o in outcomes)
        met = statistics.median(excess) <= TARGET_MEDIAN_EXCESS and most <= budget + 1
        default = " (default)" if layering == DEFAULT_LAYERING else ""
        verdict = "met" if met else "**not met**"
        rows.append(
            f"| {budget} | `{layering}`{default} | {statistics.median(excess):.2f} "
            f"| {max(excess):.2f} | {most} | "
            + (verdict if budget == DEFAULT_BUDGET else "(no target)")
            + " |"
        )
    return rows


def report(results: dict[int, list[Outcome]], quick: bool) -> str:
    count = len(results[DEFAULT_BUDGET])
    lines = [
        "## Incremental pulls",
        "",
        f"{count} pairs (A pulled, then B) from the generated family `synthetic.p000`..`p299` "
        f"(seed {SEED}; A = 2-14 packages, B = A with 0-2 removed and 1-3 added), no popularity "
        "data (the default). Sizes are compressed kB as written by the registry's layer writer; "
        "layer counts include the symlink layer. *ideal*: each store path B adds, tarred and "
        "compressed alone, plus B's symlink layer (*together*: those paths as one stream). "
        "*one layer*: B's whole closure as one layer. *excess* = downloaded / ideal."
        + (" **Quick mode**: 3 small pairs." if quick else ""),
        "",
        f"Budget {DEFAULT_BUDGET} (the default):",
        "",
        *_pair_table(results[DEFAULT_BUDGET]),
    ]
    if TIGHT_BUDGET in results:
        lines += [
            "",
            f"Budget {TIGHT_BUDGET} (`NIXERY_LAYER_BUDGET={TIGHT_BUDGET}`: every grouping merges):",
            "",
            *_pair_table(results[TIGHT_BUDGET]),
        ]
    lines += [
        "",
        f"Target at budget {DEFAULT_BUDGET}: median excess <= {TARGET_MEDIAN_EXCESS}, no image "
        "over the budget (+1 symlink layer).",
        "",
        "| budget | grouping | median excess | max excess | max layers | target |",
        "|--:|---|--:|--:|--:|---|",
    ]
    for budget, outcomes in results.items():
        lines += _summary_rows(budget, outcomes)
    lines.append("")
    return "\n".join(lines)


def run(quick: bool) -> str:
    return report(measure(quick), quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 small pairs (CI)")
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
