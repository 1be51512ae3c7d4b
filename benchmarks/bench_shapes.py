"""Layouts on a real distribution's shapes: images of hundreds of MB, as users pull.

    python -m benchmarks.bench_shapes [--quick]

The other layout benchmarks pull images of the generated family (1-5 MB, a few dozen paths).
Here the closures come from Debian 12's package index (`benchmarks/shapes.py`: a package stands
for a store path, its installed size for the nar size): an image is the shell (`bash`,
`coreutils`) and 1 to 8 of the common tools in `shapes.TOOLS`, and a pair is A, then B = A with up to two tools
removed and one to three added, drawn with a seed. No layer is written: every figure is in nar
bytes (what each layout groups), and pull times are the models fitted to real pulls in
`benchmarks/bench_docker.py` (per engine: seconds per pull, per layer and per compressed MB,
plus the bytes at the link's rate), with the layers compressed to `COMPRESSION` of their nar
size. A reused layer costs nothing; Docker's graph-driver store reuses B's leading layers
identical to A's (chain-prefix), the containerd image store every layer A has
(content-addressed).

Per layout: layers per image, the share of an image's bytes in its last store layer (where the
budget merges what is left), the median excess (B's downloaded bytes over the nar bytes of the
paths B adds), and the pairs' modelled wall time against one layer per image and against
Nixery's grouping. Popularity: none, or either count `nixery popcount` makes over nixpkgs, here
over the whole archive: the packages holding each one in their closures (`closures`, the
default) or depending on it (`references`, Nixery's count). Then what is reachable at all: the chain-prefix excess of one
layer per path in orders of the path alone, and of an order fitted to the pairs, on the pairs
and on held-out pairs (`benchmarks/_orders.py`); and a time-table row for B sending exactly the
paths it adds.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import _orders
from benchmarks import bench_docker as docker
from benchmarks._orders import OrderRow, PairPaths, pair_paths
from benchmarks.bench_docker import LINKS, LOOPBACK
from benchmarks.bench_incremental import Pair, chain_prefix, draw_pairs
from benchmarks.shapes import SHELL, TOOLS, Shapes, load
from nixery.build.graph import ClosureGraph
from nixery.build.layering import DEFAULT_BUDGET, DEFAULT_LAYERING, PLANNERS
from nixery.config import Layering

SEED = 20261202
PAIR_COUNT = 384
QUICK_PAIR_COUNT = 6
# Orders are also judged on pairs drawn as the benchmark's are with another seed.
HELD_OUT_SEED = SEED + 1
FIT_MOVES = 10_000
QUICK_FIT_MOVES = 200
TOOL_COUNTS = (1, 2, 3, 5, 8)
# gzip on binaries and libraries: a layer's compressed bytes per nar byte, assumed.
COMPRESSION = 0.4
MB = 1e6
TARGET_CONTENT_EXCESS = 1.3
TARGET_CHAIN_EXCESS = {"none": 3.0, "closures": 1.5, "references": 1.5}
TARGET_RATIO = 0.8
ANCHOR_BUDGET = 94
POPULARITIES = ("none", "closures", "references")
BUDGETS = (8, 16, 24, 32, 48, 64)
QUICK_BUDGETS = tuple(dict.fromkeys((8, DEFAULT_BUDGET)))


@dataclass(frozen=True)
class EngineCost:
    """A pull's seconds: c0 + cl x layers + cb x compressed MB, fitted to fresh loopback pulls
    (BENCHMARKS.md, `Per-layer cost` of each Docker section)."""

    label: str
    content_addressed: bool
    c0: float
    cl: float
    cb: float

    def pull_seconds(self, layers: int, nar_bytes: int, bits_per_second: float | None) -> float:
        size = nar_bytes * COMPRESSION
        transfer = 0.0 if bits_per_second is None else size * 8 / bits_per_second
        return self.c0 + self.cl * layers + self.cb * size / MB + transfer


ENGINES = (
    EngineCost("dockerd 20.10 (overlay2)", False, 0.085, 0.0648, 0.144),
    EngineCost("dockerd 28.5 (overlay2)", False, 0.112, 0.0125, 0.093),
    EngineCost("dockerd 28.5 (containerd store)", True, 0.093, 0.015, 0.085),
)


@dataclass(frozen=True)
class Layout:
    label: str
    plan: Callable[[ClosureGraph, Mapping[str, int]], list[frozenset[str]]]


def _planned(layering: Layering, budget: int) -> Callable[..., list[frozenset[str]]]:
    def plan(graph: ClosureGraph, popularity: Mapping[str, int]) -> list[frozenset[str]]:
        return [frozenset(layer.paths) for layer in PLANNERS[layering](graph, popularity, budget)]

    return plan


ONE_LAYER = "one layer"
NIXERY = f"`nixery` {ANCHOR_BUDGET}"
DEFAULT = f"`{DEFAULT_LAYERING}` {DEFAULT_BUDGET} (default)"


def layouts(quick: bool) -> list[Layout]:
    chunked = [
        Layout(
            DEFAULT if budget == DEFAULT_BUDGET else f"`chunked` {budget}",
            _planned("chunked", budget),
        )
        for budget in (QUICK_BUDGETS if quick else BUDGETS)
    ]
    anchors = [
        Layout(ONE_LAYER, _planned("prefix", 1)),
        Layout(NIXERY, _planned("nixery", ANCHOR_BUDGET)),
    ]
    if not quick:
        per_path: tuple[Layering, ...] = ("per-path", "prefix")
        anchors += [
            Layout(f"`{layering}` {ANCHOR_BUDGET}", _planned(layering, ANCHOR_BUDGET))
            for layering in per_path
        ]
    return [*sorted(chunked, key=lambda layout: layout.label != DEFAULT), *anchors]


def choose_pairs(count: int, seed: int = SEED) -> list[Pair]:
    return [
        Pair((*SHELL, *sorted(a)), (*SHELL, *sorted(b)))
        for a, b in draw_pairs(sorted(TOOLS), TOOL_COUNTS, count, seed)
    ]


@dataclass(frozen=True)
class Downloads:
    """What one client downloads for a pair: A's layers (all), then B's it lacks."""

    a_layers: int
    a_bytes: int
    b_layers: int
    b_bytes: int


@dataclass(frozen=True)
class PairOutcome:
    layers: tuple[int, int]  # store layers of A and B
    last_share: float  # B's bytes in its last store layer, over B's bytes
    new_bytes: int  # nar bytes of the paths B adds
    content: Downloads
    chain: Downloads


def _size(layer: frozenset[str], graph: ClosureGraph) -> int:
    return sum(graph.nodes[path].nar_size for path in layer)


def outcome(
    shapes: Shapes, pair: Pair, layout: Layout, popularity: Mapping[str, int]
) -> PairOutcome:
    graph_a, graph_b = shapes.closure(pair.a), shapes.closure(pair.b)
    held, wanted = layout.plan(graph_a, popularity), layout.plan(graph_b, popularity)
    a_bytes = sum(_size(layer, graph_a) for layer in held)

    def downloads(fetched: list[frozenset[str]]) -> Downloads:
        return Downloads(
            len(held), a_bytes, len(fetched), sum(_size(layer, graph_b) for layer in fetched)
        )

    return PairOutcome(
        layers=(len(held), len(wanted)),
        last_share=_size(wanted[-1], graph_b) / sum(_size(layer, graph_b) for layer in wanted),
        new_bytes=sum(
            node.nar_size for path, node in graph_b.nodes.items() if path not in graph_a.nodes
        ),
        content=downloads([layer for layer in wanted if layer not in held]),
        chain=downloads(wanted[chain_prefix(held, wanted) :]),
    )


def modelled_seconds(engine: EngineCost, outcomes: Sequence[PairOutcome], link: str) -> float:
    """The pairs' total: A's pull and B's, with the engine's reuse; +1 layer: the symlinks'."""
    rate = LINKS[link]
    total = 0.0
    for result in outcomes:
        got = result.content if engine.content_addressed else result.chain
        total += engine.pull_seconds(got.a_layers + 1, got.a_bytes, rate)
        total += engine.pull_seconds(got.b_layers + 1, got.b_bytes, rate)
    return total


@dataclass(frozen=True)
class Measured:
    pairs: list[Pair]
    outcomes: dict[tuple[str, str], list[PairOutcome]]  # (layout label, popularity) -> per pair
    layout_labels: list[str]
    image_mb: list[float]  # B's nar MB, per pair
    orders: list[OrderRow]
    held_out_count: int


def measure(quick: bool) -> Measured:
    shapes = load()
    pairs = choose_pairs(QUICK_PAIR_COUNT if quick else PAIR_COUNT)
    data = {
        "none": {},
        "closures": shapes.popularity("closures"),
        "references": shapes.popularity("references"),
    }
    chosen = layouts(quick)
    outcomes = {
        (layout.label, source): [outcome(shapes, pair, layout, data[source]) for pair in pairs]
        for layout in chosen
        for source in POPULARITIES
    }
    image_mb = [
        sum(node.nar_size for node in shapes.closure(pair.b).nodes.values()) / MB for pair in pairs
    ]
    held_out = choose_pairs(len(pairs), HELD_OUT_SEED)
    orders = order_study(shapes, pairs, held_out, data, QUICK_FIT_MOVES if quick else FIT_MOVES)
    labels = [layout.label for layout in chosen]
    return Measured(pairs, outcomes, labels, image_mb, orders, len(held_out))


def order_study(
    shapes: Shapes,
    pairs: Sequence[Pair],
    held_out: Sequence[Pair],
    popularities: Mapping[str, Mapping[str, int]],
    moves: int,
) -> list[OrderRow]:
    """What any order of the paths can reach on these shapes (`benchmarks._orders`), in nar
    bytes. Holders: how many of the images "shell and one tool" hold the path, the popularity
    that best foretells sharing, measured on the very tools the pairs are drawn from."""
    graph = shapes.closure((*SHELL, *TOOLS))
    path_size = {path: node.nar_size for path, node in graph.nodes.items()}

    def prepared(pair: Pair) -> PairPaths:
        return pair_paths(shapes.closure(pair.a), shapes.closure(pair.b), path_size, 0)

    holders = Counter(path for tool in TOOLS for path in shapes.closure((*SHELL, tool)).nodes)
    return _orders.order_study(
        graph,
        path_size,
        [prepared(pair) for pair in pairs],
        [prepared(pair) for pair in held_out],
        popularities,
        holders,
        moves,
        SEED,
    )


def _excess(results: Sequence[PairOutcome], content: bool) -> float:
    return statistics.median(
        [(r.content if content else r.chain).b_bytes / max(r.new_bytes, 1) for r in results]
    )


def report(measured: Measured, quick: bool) -> str:
    links = (LOOPBACK, "100 Mbit/s") if quick else tuple(LINKS)
    sizes = sorted(measured.image_mb)
    lines = [
        "## Layouts on a real distribution's shapes",
        "",
        f"{len(measured.pairs)} pairs (seed {SEED}) of images from Debian 12's dependency "
        "graph (`benchmarks/shapes.py`, snapshot `benchmarks/data/debian-12-shapes.json`): A = "
        f"the shell and {TOOL_COUNTS[0]}-{TOOL_COUNTS[-1]} of {len(TOOLS)} common tools, B = A "
        "with up to two removed and one to three added; a package stands for a store path, its "
        "installed size for the nar size. B's closures: "
        f"median {statistics.median(sizes):,.0f} MB, {sizes[0]:,.0f}-{sizes[-1]:,.0f} MB (the generated "
        "family's: 1-5 MB). Layers are planned by the registry's layering, not written: bytes "
        "are nar bytes. *last layer*: the median share of B's bytes in its last store layer, "
        "where the budget merges what is left. *excess*: B's download over the nar bytes of "
        "the paths B adds, content-addressed (any layer A has is reused) and chain-prefix "
        "(Docker's graph-driver store: B's leading layers identical to A's). Popularity: none, "
        "or a count over the whole archive, as `nixery popcount` counts over nixpkgs: "
        "*closures*, the packages holding the package in their closures (its default), or "
        "*references*, those depending on it (`--count references`, Nixery's count).",
        "",
        "| layout | popularity | layers per image (max) | last layer | content-addressed "
        "median excess | chain-prefix median excess |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for label in measured.layout_labels:
        for source in POPULARITIES:
            results = measured.outcomes[label, source]
            counts = [count for r in results for count in r.layers]
            lines.append(
                f"| {label} | {source} | {statistics.mean(counts):.1f} ({max(counts)}) "
                f"| {statistics.median([r.last_share for r in results]):.0%} "
                f"| {_excess(results, True):.2f} | {_excess(results, False):.2f} |"
            )
    lines += [
        "",
        *_targets(measured),
        "",
        *_time_table(measured, links),
        "",
        "What any order can reach: chain-prefix excess with one layer per path in one order "
        "for every image, the least any grouping of that order can send "
        f"(`benchmarks/_orders.py`). Held-out pairs: drawn as the pairs above, seed "
        f'{HELD_OUT_SEED}. *holders*: how many of the {len(TOOLS)} images "shell and one '
        'tool" hold the path, popularity measured on the very tools the pairs are drawn '
        "from. The fitted order: local search from the default's key (no popularity data), "
        "moving one path at a time while the pairs' median excess does not grow.",
        "",
        *_orders.order_table(measured.orders, measured.held_out_count),
        "",
    ]
    return "\n".join(lines)


def _targets(measured: Measured) -> list[str]:
    lines = []
    for source in POPULARITIES:
        results = measured.outcomes[DEFAULT, source]
        content, chain = _excess(results, True), _excess(results, False)
        lines.append(
            f"- The default, popularity {source}: content-addressed median excess {content:.2f} "
            f"(target <= {TARGET_CONTENT_EXCESS}: "
            f"{_met(content <= TARGET_CONTENT_EXCESS)}), chain-prefix {chain:.2f} (target <= "
            f"{TARGET_CHAIN_EXCESS[source]}: {_met(chain <= TARGET_CHAIN_EXCESS[source])})."
        )
    return lines


def _met(met: bool) -> str:
    return "met" if met else "**not met**"


def _time_table(measured: Measured, links: Sequence[str]) -> list[str]:
    columns = [(engine, link) for engine in ENGINES for link in links]
    lines = [
        "Pairs' total wall time by the engines' models (A's pull and B's, every pair; "
        f"compressed = {COMPRESSION} x nar bytes), no popularity data, against one layer per "
        f"image / against Nixery's grouping (target <= {TARGET_RATIO} against both):",
        "",
        "| layout | " + " | ".join(f"{engine.label}, {link}" for engine, link in columns) + " |",
        "|---|" + "--:|" * len(columns),
    ]

    def seconds(label: str, engine: EngineCost, link: str) -> float:
        return modelled_seconds(engine, measured.outcomes[label, "none"], link)

    bound = [_new_paths_only(result) for result in measured.outcomes[DEFAULT, "none"]]
    rows = [
        *((label, measured.outcomes[label, "none"]) for label in measured.layout_labels),
        (NEW_PATHS_ONLY, bound),
    ]
    for label, outcomes in rows:
        cells = []
        for engine, link in columns:
            mine = modelled_seconds(engine, outcomes, link)
            one, nixery = seconds(ONE_LAYER, engine, link), seconds(NIXERY, engine, link)
            cells.append(f"{mine / one:.2f} / {mine / nixery:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [
        *lines,
        "",
        f"- *{NEW_PATHS_ONLY}*: A as the default lays it out, then B's new paths alone in one "
        "layer: with A pulled as the default pulls it, no layout's B can cost less, as this B "
        "sends nothing A holds.",
    ]


NEW_PATHS_ONLY = "B's new paths only (bound)"


def _new_paths_only(result: PairOutcome) -> PairOutcome:
    """`result`'s A pull, then a B pull of exactly the paths B adds, in one layer."""
    b = Downloads(
        result.content.a_layers,
        result.content.a_bytes,
        1 if result.new_bytes else 0,
        result.new_bytes,
    )
    return PairOutcome(result.layers, result.last_share, result.new_bytes, b, b)


def run(quick: bool) -> str:
    return report(measure(quick), quick)


# Pulled for real: the package set that builds the snapshot's closures (`benchmarks/pkgs/
# shapes.nix`), the first pairs whose names all fit an image name (Docker references allow no
# `+`), pulled by a real engine with the default, the previous default and the anchors.
SHAPES_PKGS = Path(__file__).resolve().parent / "pkgs" / "shapes.nix"
PULL_PAIRS = 4
PULL_LINKS = (LOOPBACK, "100 Mbit/s")
# Quick: one small pair, loopback only (about 60 MB images).
QUICK_PULL_PAIR = Pair((*SHELL, "less"), (*SHELL, "less", "tree"))
MODELS = dict(zip(("20.10", "28.5", "28.5-containerd"), ENGINES, strict=True))
PREVIOUS_DEFAULT_BUDGET = 8


def pull_pairs(quick: bool) -> list[Pair]:
    if quick:
        return [QUICK_PULL_PAIR]
    usable = [
        pair
        for pair in choose_pairs(PAIR_COUNT)
        if all(re.fullmatch(r"[a-z0-9._-]+", name) for name in (*pair.a, *pair.b))
    ]
    return usable[:PULL_PAIRS]


PullLayout = tuple[Layering, int, str]  # layering, budget, label


def pull_layout_specs(budgets: Sequence[int] = ()) -> list[PullLayout]:
    """The default, the previous default, `chunked` at `budgets`, and the anchors."""
    chunked = dict.fromkeys((DEFAULT_BUDGET, PREVIOUS_DEFAULT_BUDGET, *budgets))
    return [
        *(("chunked", budget, f"`chunked` {budget}") for budget in chunked),
        ("prefix", 1, ONE_LAYER),
        ("nixery", ANCHOR_BUDGET, NIXERY),
    ]


def pull(quick: bool, engine_name: str, budgets: Sequence[int] = ()) -> str:
    """The pairs pulled by a real engine; beside each ratio, the model's for the same pairs."""
    engine = docker.ENGINES[engine_name]
    links = (LOOPBACK,) if quick else PULL_LINKS
    specs = pull_layout_specs(budgets)
    layouts = [docker._layout(*spec, links, True) for spec in specs]
    pairs = pull_pairs(quick)
    shapes = load()
    with tempfile.TemporaryDirectory(prefix="nixery-bench-shapes-") as name:
        results = docker.measure_layouts(
            Path(name),
            layouts,
            quick=False,
            engine=engine,
            fresh_pulls=False,
            pairs=pairs,
            server_env={"NIXERY_PKGS_PATH": str(SHAPES_PKGS)},
            only_links=links,
        )
    modelled = {
        (layout.label, link): _modelled(shapes, pairs, spec, MODELS[engine_name], link)
        for spec, layout in zip(specs, layouts, strict=True)
        for link in links
    }
    return pull_report(shapes, results, pairs, links, engine, modelled)


def _modelled(
    shapes: Shapes, pairs: Sequence[Pair], spec: PullLayout, model: EngineCost, link: str
) -> float:
    """The model's pairs total for one layout."""
    layering, budget, label = spec
    layout = Layout(label, _planned(layering, budget))
    return modelled_seconds(model, [outcome(shapes, pair, layout, {}) for pair in pairs], link)


def pull_report(
    shapes: Shapes,
    results: docker.Results,
    pairs: Sequence[Pair],
    links: Sequence[str],
    engine: docker.Engine,
    modelled: Mapping[tuple[str, str], float],  # (layout label, link) -> the model's seconds
) -> str:
    labels = list(results)
    default = labels[0]
    lines = [
        f"### Pulled for real: {engine.label}",
        "",
        f"{len(pairs)} of the pairs above (the first whose names fit an image name), built by "
        "`nixery serve` from `benchmarks/pkgs/shapes.nix` (each package its installed size of "
        "generated data, about 0.4 of it once gzipped, referencing its dependencies), A then B "
        f"on a fresh {engine.label}, layouts interleaved. A s / B s (B's layers reused, from "
        "the registry's access log / predicted from the manifests).",
        "",
        "| pair | B, MB | link | " + " | ".join(labels) + " |",
        "|---|--:|---|" + "--:|" * len(labels),
    ]
    mismatches = 0
    for number, pair in enumerate(pairs):
        size = sum(node.nar_size for node in shapes.closure(pair.b).nodes.values()) / MB
        change = " ".join(
            [
                *(f"+{t}" for t in sorted(set(pair.b) - set(pair.a))),
                *(f"-{t}" for t in sorted(set(pair.a) - set(pair.b))),
            ]
        )
        for link in links:
            cells = []
            for label in labels:
                got = results[label][link].pairs[number]
                reused = got.b.layers - got.b_fetched
                mismatches += reused != got.b_predicted
                cells.append(
                    f"{got.a.seconds:.1f} / {got.b.seconds:.1f} ({reused} / {got.b_predicted})"
                )
            lines.append(
                f"| {' '.join(pair.a[len(SHELL) :])} {change} | {size:,.0f} | {link} | "
                + " | ".join(cells)
                + " |"
            )
    lines += [
        "",
        "Pairs total, s; the default against each layout, measured (the model's, for "
        "the same pairs with the fit above):",
        "",
        "| layout | " + " | ".join(links) + " |",
        "|---|" + "--:|" * len(links),
    ]
    for label in labels:
        cells = []
        for link in links:
            total = results[label][link].pairs_seconds
            ratio = results[default][link].pairs_seconds / total
            predicted = modelled[default, link] / modelled[label, link]
            cells.append(f"{total:.1f}: default {ratio:.2f}x ({predicted:.2f}x)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"- Reuse counted from the manifests ({'content-addressed' if engine.content_addressed else 'chain-prefix'}) "
        "against the blobs the engine fetched: "
        + ("every pull agrees." if mismatches == 0 else f"**{mismatches} pulls disagree**."),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 pairs, two budgets (CI)")
    parser.add_argument(
        "--pull",
        choices=sorted(docker.ENGINES),
        help="also pull pairs for real with this engine (Debian 12's dockerd, or sid's)",
    )
    parser.add_argument(
        "--budgets",
        default="",
        help="with --pull: `chunked` at these budgets too, comma-separated (e.g. 16,32)",
    )
    args = parser.parse_args()
    print(run(args.quick))
    if args.pull:
        budgets = [int(budget) for budget in args.budgets.split(",") if budget.strip()]
        print(pull(args.quick, args.pull, budgets))


if __name__ == "__main__":
    main()
