"""How low the chain-prefix excess of the incremental pairs can go when a path's position in the
layer list depends on the path alone, whatever the grouping.

With one layer per store path, in one order for every image, Docker's graph-driver store
downloads exactly B's paths from the first path that one of A and B holds and the other lacks
(the lists agree up to there), plus B's symlink layer. Grouping the same order into fewer layers
can only download more store paths: the group that holds the first difference comes whole. So
the per-path figure of an order bounds every grouping of that order from below (`chunked`
included), up to what compressing paths together saves over compressing each alone (the
*together* row of the incremental summary: a few percent).

Orders measured: keys that depend on the path (the default's `prefix_order_key`, Nixery's
rating, nar size alone, and a popularity counted as the number of packages whose closure holds
the path), and an order fitted by local search to the benchmark's pairs: the lowest median a
single order was found to reach on them. Each is also measured on held-out
pairs drawn with another seed, which shows whether an order generalises or only fits the pairs
it was chosen for.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nixery.build.graph import ClosureGraph
from nixery.build.layering import plan_per_path_layers, plan_prefix_layers

# Past this, a pair's excess counts as this much in the fit's tie-break: one pair that downloads
# everything must not outweigh many small gains.
EXCESS_CAP = 10.0


@dataclass(frozen=True)
class PairPaths:
    held: frozenset[str]  # A's closure
    wanted: tuple[str, ...]  # B's closure
    links: int  # compressed size of B's symlink layer
    ideal: int  # B's new paths, each compressed alone, plus B's symlink layer

    @property
    def differing(self) -> frozenset[str]:
        return self.held.symmetric_difference(self.wanted)


def pair_paths(
    held: ClosureGraph, wanted: ClosureGraph, path_size: Mapping[str, int], links: int
) -> PairPaths:
    new = [path for path in wanted.nodes if path not in held.nodes]
    return PairPaths(
        held=frozenset(held.nodes),
        wanted=tuple(sorted(wanted.nodes)),
        links=links,
        # At least one byte: a pair whose B adds nothing still has an excess to report.
        ideal=max(sum(path_size[path] for path in new) + links, 1),
    )


def chain_excess(
    pair: PairPaths, position: Mapping[str, int], path_size: Mapping[str, int]
) -> float:
    """B's download with one layer per path in `position` order, over the ideal."""
    differing = pair.differing
    if not differing:
        return pair.links / pair.ideal
    first = min(position[path] for path in differing)
    downloaded = sum(path_size[path] for path in pair.wanted if position[path] >= first)
    return (downloaded + pair.links) / pair.ideal


def median_excess(
    pairs: Sequence[PairPaths], position: Mapping[str, int], path_size: Mapping[str, int]
) -> float:
    return statistics.median(chain_excess(pair, position, path_size) for pair in pairs)


def positions(order: Sequence[str]) -> dict[str, int]:
    return {path: index for index, path in enumerate(order)}


def fitted_order(
    start: Sequence[str],
    pairs: Sequence[PairPaths],
    path_size: Mapping[str, int],
    moves: int,
    seed: int,
) -> list[str]:
    """Local search from `start`: move one path elsewhere, keep the move unless it makes the
    pairs' median excess (then their capped sum) worse."""
    rng = random.Random(seed)

    def score(order: list[str]) -> tuple[float, float]:
        position = positions(order)
        excess = [chain_excess(pair, position, path_size) for pair in pairs]
        return statistics.median(excess), sum(min(value, EXCESS_CAP) for value in excess)

    order = list(start)
    best = score(order)
    for _ in range(moves):
        candidate = order[:]
        candidate.insert(rng.randrange(len(order)), candidate.pop(rng.randrange(len(order))))
        candidate_score = score(candidate)
        if candidate_score <= best:
            order, best = candidate, candidate_score
    return order


@dataclass(frozen=True)
class OrderRow:
    label: str
    popularity: str  # "none", "popcount", or "-" for an order that uses none
    fitted: float  # median chain-prefix excess on the benchmark's pairs
    held_out: float  # on the held-out pairs


def key_orders(graph: ClosureGraph, popularity: Mapping[str, int]) -> dict[str, list[str]]:
    """Every path of `graph`, in the orders of keys that depend on the path alone."""
    budget = len(graph.nodes)
    return {
        "`prefix_order_key` (the default's)": [
            layer.paths[0] for layer in plan_prefix_layers(graph, popularity, budget)
        ],
        "Nixery's rating (popularity x nar size)": [
            layer.paths[0] for layer in plan_per_path_layers(graph, popularity, budget)
        ],
    }


def holder_order(graph: ClosureGraph, holders: Mapping[str, int]) -> list[str]:
    """By how many of the images `holders` counts over hold the path, times nar size: Nixery's
    rating on a count taken on the very images the pairs are drawn from."""
    return sorted(
        graph.nodes, key=lambda path: (-holders.get(path, 1) * graph.nodes[path].nar_size, path)
    )


def size_order(graph: ClosureGraph) -> list[str]:
    """Largest first: the order a key without popularity or graph data would give."""
    return sorted(graph.nodes, key=lambda path: (-graph.nodes[path].nar_size, path))


def order_study(
    graph: ClosureGraph,
    path_size: Mapping[str, int],
    fit: Sequence[PairPaths],
    held_out: Sequence[PairPaths],
    popularities: Mapping[str, Mapping[str, int]],
    holders: Mapping[str, int],
    moves: int,
    seed: int,
) -> list[OrderRow]:
    """Median chain-prefix excess with one layer per path over `graph`'s paths (the union of
    every pair's closures), on `fit` and `held_out`, for: the key orders with each of
    `popularities` (source label -> data), `holder_order` with `holders`, `size_order`, and
    last an order fitted to `fit` by `moves` moves from the first key order."""

    def row(label: str, popularity: str, order: Sequence[str]) -> OrderRow:
        position = positions(order)
        return OrderRow(
            label,
            popularity,
            median_excess(fit, position, path_size),
            median_excess(held_out, position, path_size),
        )

    rows = []
    start: list[str] = []
    for source, popularity in popularities.items():
        for label, order in key_orders(graph, popularity).items():
            rows.append(row(label, source, order))
            start = start or order
    rows.append(
        row("packages holding the path x nar size", "holders", holder_order(graph, holders))
    )
    rows.append(row("nar size", "-", size_order(graph)))
    fitted = fitted_order(start, fit, path_size, moves, seed)
    rows.append(row(f"fitted to the {len(fit)} pairs ({moves:,} moves)", "-", fitted))
    return rows


def order_table(rows: Sequence[OrderRow], held_out_count: int) -> list[str]:
    """`order_study`'s rows as a Markdown table, then the best key and the fitted order."""
    lines = [
        "| order | popularity | median, the benchmark's pairs "
        f"| median, {held_out_count} held-out pairs |",
        "|---|---|--:|--:|",
    ]
    lines += [
        f"| {row.label} | {row.popularity} | {row.fitted:.2f} | {row.held_out:.2f} |"
        for row in rows
    ]
    *keys, fitted = rows
    best = min(keys, key=lambda row: row.held_out)
    return [
        *lines,
        "",
        f"- Best key of the path on held-out pairs: {best.label} ({best.popularity}), "
        f"{best.held_out:.2f}. The order fitted to the benchmark's pairs: {fitted.fitted:.2f} on "
        f"them, {fitted.held_out:.2f} on held-out pairs.",
    ]
