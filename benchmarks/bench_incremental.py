"""Incremental pulls: what a client holding image A downloads to pull an overlapping image B.

    python -m benchmarks.bench_incremental [--quick]

Images are drawn from the generated family of the test package set (`tests/pkgs/synthetic.nix`,
`synthetic.p000` .. `synthetic.p299`, plus the `cacert` and `iana-etc` every image gets). The
pairs are fixed by a seed: A is k packages (k from 2 to 14; B at most 17, the most an image name can hold), B is A with up to two packages
removed and one to three added.

Every layer is written by the registry's own layer writer (`nixery.build.layers`) from the real store
paths, so sizes are compressed bytes as served; the plan is one of `PLANNERS` at a budget of store
path layers, plus the image's symlink layer, exactly as `ImageBuilder` does. Configurations
(`CONFIGS`): the default (`chunked` at NIXERY_LAYER_BUDGET's default), `chunked` at budgets 4, 8,
16 and 24, and the anchors at Nixery's budget of 94: `per-path` (the previous default), `prefix`
and `nixery`.

- downloaded: the compressed sizes of B's layers whose digests A's manifest does not list;
- ideal: each store path B has and A lacks, tarred and compressed alone by the same writer,
  plus B's symlink layer (no grouping can send less without compressing paths together);
- ideal, together: the same paths compressed as one stream (what a perfect grouping of B's new
  paths into one layer would send; below the per-path ideal by the per-layer tar and gzip
  overhead);
- one layer per image: B's whole closure as one layer, plus its symlink layer.

Downloads are counted both ways clients reuse layers:

- content-addressed (containerd, podman, Docker with the containerd image store): every layer
  of B whose digest A's manifest lists is reused;
- chain-prefix (Docker's graph-driver store, overlay2 or vfs: its layers are keyed by chain
  ID): only B's leading layers identical to A's, up to the first that differs, are reused
  (`benchmarks/bench_docker.py` checks this count against a real dockerd's "Already exists").

Each is measured without popularity data and with the counts `nixery popcount` computes for
the test package set.

Then what any layout can reach (`benchmarks/_orders.py`): the chain-prefix excess of one layer
per path in orders that depend on the path alone, and of an order fitted to the pairs, on the
pairs and on held-out pairs drawn with another seed.

At budget 94 no image of these pairs needs merging (B holds at most 17 family members, the most
a 255-character image name can name, under 95 store paths).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from benchmarks import _orders
from benchmarks._orders import OrderRow, PairPaths, pair_paths
from benchmarks._serving import OFFLINE_NIX_CONFIG, TEST_PKGS
from nixery.build.contract import NixSource
from nixery.build.graph import ClosureGraph
from nixery.build.layering import DEFAULT_BUDGET, DEFAULT_LAYERING, PLANNERS
from nixery.build.layers import LayerBlob, write_store_layer, write_symlink_layer
from nixery.build.nix import Nix
from nixery.build.popcount import popcount
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
# Pairs drawn as the benchmark's are, with another seed: orders are also judged on pairs they
# were not chosen (or fitted) for.
HELD_OUT_SEED = SEED + 1
HELD_OUT_PAIR_COUNT = 96
QUICK_HELD_OUT_PAIR_COUNT = 6
FIT_MOVES = 20_000
QUICK_FIT_MOVES = 200
TARGET_MEDIAN_EXCESS = 1.3  # content-addressed
TARGET_CHAIN_EXCESS_WITH_POPULARITY = 1.5
TARGET_CHAIN_EXCESS_WITHOUT = 3.0
POPULARITY_SOURCES = ("none", "popcount")
ANCHOR_BUDGET = 94  # Nixery's, and NIXERY_LAYER_BUDGET's default before `chunked`
CHUNKED_BUDGETS = (4, 8, 16, 24)
Config = tuple[Layering, int]  # grouping, budget
DEFAULT_CONFIG: Config = (DEFAULT_LAYERING, DEFAULT_BUDGET)
CONFIGS: tuple[Config, ...] = tuple(
    dict.fromkeys(
        [
            DEFAULT_CONFIG,
            *(("chunked", budget) for budget in CHUNKED_BUDGETS),
            ("per-path", ANCHOR_BUDGET),
            ("prefix", ANCHOR_BUDGET),
            ("nixery", ANCHOR_BUDGET),
        ]
    )
)
# The columns of the pair table (all configurations are in the summary).
TABLE_CONFIGS: tuple[Config, ...] = tuple(
    dict.fromkeys([DEFAULT_CONFIG, ("per-path", ANCHOR_BUDGET), ("nixery", ANCHOR_BUDGET)])
)


def config_label(config: Config) -> str:
    layering, budget = config
    return f"`{layering}` {budget}" + (" (default)" if config == DEFAULT_CONFIG else "")


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


Member = TypeVar("Member")


def draw_pairs(
    population: Sequence[Member], sizes: Sequence[int], count: int, seed: int
) -> list[tuple[list[Member], list[Member]]]:
    """The pairs' rule, as (A, B): pair n's A is `sizes[n % len(sizes)]` members of `population`
    (which is sorted), B is A with `min(n % 3, |A| - 1)` removed and `1 + (n // 3) % 3` added."""
    rng = random.Random(seed)
    pairs = []
    for number in range(count):
        size = sizes[number % len(sizes)]
        a = rng.sample(population, size)
        removed = set(rng.sample(a, min(number % 3, size - 1)))
        absent = [member for member in population if member not in set(a)]
        added = rng.sample(absent, 1 + (number // 3) % 3)
        pairs.append((a, [member for member in a if member not in removed] + added))
    return pairs


def choose_pairs(count: int, sizes: Sequence[int], seed: int = SEED) -> list[Pair]:
    return [
        Pair(tuple(family_name(i) for i in sorted(a)), tuple(family_name(i) for i in sorted(b)))
        for a, b in draw_pairs(range(FAMILY_SIZE), sizes, count, seed)
    ]


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
        self._nix = nix
        self._popularity: dict[str, int] | None = None

    def popularity(self, source: str) -> dict[str, int]:
        """No data ("none"), or what `nixery popcount` computes for the test package set."""
        if source == "none":
            return {}
        if self._popularity is None:
            self._popularity = popcount(
                self._nix, NixSource("path", str(TEST_PKGS)), "x86_64-linux", True, None
            )
        return self._popularity

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

    def union_closure(self, images: Iterable[str]) -> ClosureGraph:
        graphs = [self.closure(image) for image in images]
        roots = sorted({root for graph in graphs for root in graph.roots})
        nodes = {path: node for graph in graphs for path, node in graph.nodes.items()}
        return ClosureGraph(tuple(roots), dict(sorted(nodes.items())))

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
        self,
        image: str,
        layering: Layering,
        budget: int = DEFAULT_BUDGET,
        popularity: str = "none",
    ) -> list[LayerBlob]:
        """The layers of the image's manifest, in order, as `ImageBuilder` makes them."""
        graph = self.closure(image)
        plan = PLANNERS[layering](graph, self.popularity(popularity), budget)
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


def chain_prefix(held: Sequence[object], wanted: Sequence[object]) -> int:
    """How many of B's leading layers Docker's graph-driver store reuses: those identical to A's
    at the same position, up to the first that differs (a layer is keyed by its whole chain
    below it)."""
    shared = 0
    for have, want in zip(held, wanted, strict=False):
        if have != want:
            break
        shared += 1
    return shared


def chain_prefix_bytes(held: Sequence[LayerBlob], wanted: Sequence[LayerBlob]) -> int:
    """What Docker's graph-driver store downloads: B's layers after the chain prefix."""
    digests = [blob.digest for blob in held], [blob.digest for blob in wanted]
    return sum(blob.size for blob in wanted[chain_prefix(*digests) :])


@dataclass(frozen=True)
class Outcome:
    pair: Pair
    paths_a: int
    paths_b: int
    new_paths: int
    ideal: int
    ideal_together: int
    one_layer: int
    layers_a: dict[Config, int]  # no popularity data
    layers_b: dict[Config, int]
    # (configuration, popularity source) -> bytes downloaded, content-addressed / chain-prefix
    content: dict[tuple[Config, str], int]
    chain: dict[tuple[Config, str], int]

    def excess(self, config: Config, popularity: str = "none") -> float:
        return self.content[config, popularity] / self.ideal

    def chain_excess(self, config: Config, popularity: str = "none") -> float:
        return self.chain[config, popularity] / self.ideal


@dataclass(frozen=True)
class Measured:
    outcomes: list[Outcome]
    orders: list[OrderRow]
    held_out_count: int


def measure(quick: bool) -> Measured:
    """The outcome of every pair, for every configuration, and the order study."""
    if quick:
        pairs = choose_pairs(QUICK_PAIR_COUNT, QUICK_SIZES)
        held_out = choose_pairs(QUICK_HELD_OUT_PAIR_COUNT, QUICK_SIZES, HELD_OUT_SEED)
    else:
        pairs = choose_pairs(PAIR_COUNT, SIZES)
        held_out = choose_pairs(HELD_OUT_PAIR_COUNT, SIZES, HELD_OUT_SEED)
    moves = QUICK_FIT_MOVES if quick else FIT_MOVES
    images = sorted(
        {image for pair in [*pairs, *held_out] for image in (pair.a_image, pair.b_image)}
    )
    family = [family_name(index) for index in range(FAMILY_SIZE)]
    with tempfile.TemporaryDirectory(prefix="nixery-bench-incremental-") as name:
        bench = Workbench(Path(name), images + family)
        outcomes = [_outcome(bench, pair) for pair in pairs]
        orders = order_study(bench, images, pairs, held_out, moves)
    return Measured(outcomes, orders, len(held_out))


def order_study(
    bench: Workbench,
    images: Sequence[str],
    pairs: Sequence[Pair],
    held_out: Sequence[Pair],
    moves: int,
) -> list[OrderRow]:
    """Median chain-prefix excess with one layer per path, by order (`benchmarks._orders`), over
    the paths of `images` (those of the pairs and the held-out pairs)."""
    graph = bench.union_closure(images)
    with ThreadPoolExecutor(2) as pool:
        sizes = list(pool.map(lambda path: bench.store_layer([path]).size, graph.nodes))
    path_size = dict(zip(graph.nodes, sizes, strict=True))

    def prepared(pair: Pair) -> PairPaths:
        wanted = bench.closure(pair.b_image)
        links = bench.symlink_layer(wanted.roots).size
        return pair_paths(bench.closure(pair.a_image), wanted, path_size, links)

    holders = Counter(
        path for index in range(FAMILY_SIZE) for path in bench.closure(family_name(index)).nodes
    )
    return _orders.order_study(
        graph,
        path_size,
        [prepared(pair) for pair in pairs],
        [prepared(pair) for pair in held_out],
        {source: bench.popularity(source) for source in POPULARITY_SOURCES},
        holders,
        moves,
        SEED,
    )


def _outcome(bench: Workbench, pair: Pair) -> Outcome:
    layers_a: dict[Config, int] = {}
    layers_b: dict[Config, int] = {}
    content: dict[tuple[Config, str], int] = {}
    chain: dict[tuple[Config, str], int] = {}
    for config in CONFIGS:
        layering, budget = config
        for source in POPULARITY_SOURCES:
            held = bench.image_layers(pair.a_image, layering, budget, source)
            wanted = bench.image_layers(pair.b_image, layering, budget, source)
            content[config, source] = downloaded_bytes(held, wanted)
            chain[config, source] = chain_prefix_bytes(held, wanted)
            if source == "none":
                layers_a[config], layers_b[config] = len(held), len(wanted)
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
        layers_a=layers_a,
        layers_b=layers_b,
        content=content,
        chain=chain,
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
        + " ".join(
            f"| {config_label(config)} kB (excess) | chain-prefix kB (excess) | layers"
            for config in TABLE_CONFIGS
        )
        + " |",
        "|---|---|--:|--:|--:" + "|--:|--:|--:" * len(TABLE_CONFIGS) + "|",
    ]
    for outcome in outcomes:
        cells = [
            _short(outcome.pair.a),
            _change(outcome.pair),
            f"{outcome.paths_a}/{outcome.paths_b} ({outcome.new_paths})",
            f"{outcome.ideal / kb:,.0f} ({outcome.ideal_together / kb:,.0f})",
            f"{outcome.one_layer / kb:,.0f} ({outcome.one_layer / outcome.ideal:.2f})",
        ]
        for config in TABLE_CONFIGS:
            cells.append(
                f"{outcome.content[config, 'none'] / kb:,.0f} ({outcome.excess(config):.2f})"
            )
            cells.append(
                f"{outcome.chain[config, 'none'] / kb:,.0f} ({outcome.chain_excess(config):.2f})"
            )
            cells.append(f"{outcome.layers_a[config]} -> {outcome.layers_b[config]}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _summary_rows(outcomes: list[Outcome]) -> list[str]:
    one_layer = [outcome.one_layer / outcome.ideal for outcome in outcomes]
    together = [outcome.ideal_together / outcome.ideal for outcome in outcomes]
    median_one = statistics.median(one_layer)
    rows = [
        f"| ideal, paths compressed together | - | {statistics.median(together):.2f} "
        f"| {max(together):.2f} | {statistics.median(together):.2f} | - | - |",
        f"| one layer per image | - | {median_one:.2f} | {max(one_layer):.2f} "
        f"| {median_one:.2f} | 2 | - |",
    ]
    for config in CONFIGS:
        most = max(max(o.layers_a[config], o.layers_b[config]) for o in outcomes)
        for source in POPULARITY_SOURCES:
            content = [o.excess(config, source) for o in outcomes]
            chain = [o.chain_excess(config, source) for o in outcomes]
            verdict = "(anchor)" if config[0] != "chunked" else "(candidate)"
            if config == DEFAULT_CONFIG:
                chain_target = (
                    TARGET_CHAIN_EXCESS_WITH_POPULARITY
                    if source == "popcount"
                    else TARGET_CHAIN_EXCESS_WITHOUT
                )
                content_met = statistics.median(content) <= TARGET_MEDIAN_EXCESS
                chain_met = statistics.median(chain) <= chain_target
                verdict = (
                    f"content <= {TARGET_MEDIAN_EXCESS}: {'met' if content_met else '**not met**'}"
                    f"; chain <= {chain_target}: {'met' if chain_met else '**not met**'}"
                )
            rows.append(
                f"| {config_label(config)} | {source} "
                f"| {statistics.median(content):.2f} | {max(content):.2f} "
                f"| {statistics.median(chain):.2f} | {most} | {verdict} |"
            )
    return rows


def report(measured: Measured, quick: bool) -> str:
    outcomes = measured.outcomes
    lines = [
        "## Incremental pulls",
        "",
        f"{len(outcomes)} pairs (A pulled, then B) from the generated family "
        f"`synthetic.p000`..`p299` "
        f"(seed {SEED}; A = 2-14 packages, B = A with 0-2 removed and 1-3 added). Sizes are "
        "compressed kB as written by the registry's layer writer; layer counts include the "
        "symlink layer. *ideal*: each store path B adds, tarred and compressed alone, plus B's "
        "symlink layer (*together*: those paths as one stream). *one layer*: B's whole closure "
        "as one layer. *excess* = downloaded / ideal. Downloads are counted the two ways "
        "clients reuse layers: *content-addressed* (containerd, podman, modern Docker: any "
        "layer A has) and *chain-prefix* (Docker's graph-driver store: only B's leading layers "
        "identical to A's). Groupings are named with their budget (`NIXERY_LAYER_BUDGET`). "
        "The pair table uses no popularity data; the summary also uses the counts of "
        "`nixery popcount` over the test package set."
        + (" **Quick mode**: 3 small pairs." if quick else ""),
        "",
        "Pairs, no popularity data:",
        "",
        *_pair_table(outcomes),
        "",
        "Targets for the default grouping: content-addressed median "
        f"excess <= {TARGET_MEDIAN_EXCESS}; chain-prefix median excess <= "
        f"{TARGET_CHAIN_EXCESS_WITH_POPULARITY} with popularity data and <= "
        f"{TARGET_CHAIN_EXCESS_WITHOUT} without. Nixery's grouping and `per-path` are the "
        "anchors.",
        "",
        "| grouping | popularity | content-addressed median excess | max "
        "| chain-prefix median excess | max layers | target |",
        "|---|---|--:|--:|--:|--:|---|",
        *_summary_rows(outcomes),
        "",
        "What any order can reach: chain-prefix excess with one layer per path in one order "
        "for every image, the least any grouping of that order can send (`benchmarks/_orders.py`)"
        f". Held-out pairs: drawn as the benchmark's pairs are, with seed {HELD_OUT_SEED}. "
        f"*holders*: how many of the family's {FAMILY_SIZE} images hold the path. The "
        "fitted order: local search from the default's key (no popularity data), moving one "
        "path at a time while the benchmark pairs' median excess does not grow.",
        "",
        *_orders.order_table(measured.orders, measured.held_out_count),
        "",
    ]
    return "\n".join(lines)


def run(quick: bool) -> str:
    return report(measure(quick), quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 small pairs (CI)")
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
