"""Which store paths share an image layer (`NIXERY_LAYERING`): a few prefix-stable chunks (the
default), Nixery's dominator-tree grouping made deterministic, and two one-layer-per-path
groupings.

Nixery's algorithm (`plan_layers`) follows Nixery (blog post "nixery-layers", 2019; `layers/layers.go`):

1. Build a graph with a synthetic root that has an edge to every top-level path of the
   image, and an edge from every store path to each of its references.
2. A path that is *big* (its runtime closure is larger than 100 MB, as Nixery measures it)
   or *popular* (popularity >= 100) also gets an edge from the synthetic root, so that no
   other path can dominate it: it becomes a layer of its own, shared by every image that
   contains it.
3. Each direct child of the root in the dominator tree, together with everything it
   dominates, is one layer. Paths dominated by a child are only reachable through it, so
   they are only useful together with it.
4. If there are more layers than the budget, the lowest-rated ones are merged (see
   `plan_layers`).

Unlike Nixery, every step is deterministic: all ties are broken by the sorted path tuple,
and nothing depends on dict/set iteration order or on PYTHONHASHSEED.

The per-path grouping (`plan_per_path_layers`) gives every store path a layer of its own while
the image is within the budget. A dominator subtree's layer changes whenever another image
reaches one of its members by a different route, while a single path's layer is the same in
every image that holds the path, so overlapping images share every layer they can. Beyond the
budget, the least valuable paths (rating = popularity x nar size, as Nixery rates layers) share
one layer: the smallest and rarest content, which costs least to download again.

The prefix grouping (`plan_prefix_layers`) also gives every path a layer, in an order that
depends on each path alone (`prefix_order_key`), so that Docker's chain-ID store reuses the
leading run two images share.

The chunked grouping (`plan_chunked_layers`, the default) keeps that order but cuts it into a
few layers of about `CHUNK_BYTES` each, at cut points that depend on each path alone
(`chunk_ends_after`: a size-weighted, hash-drawn content-defined cut), merging the last chunks
beyond the budget. Measured with a real dockerd (benchmarks/bench_docker.py), every layer costs
a pull about 0.1 s whatever the link (dockerd 20.10; 28.5 about 0.0125 s), so dozens of per-path
layers lose to a few chunks on small images, while a single layer per image shares nothing
between images. The budget binds only on big images (over about 100 MB of store paths, as
images of a real distribution's shapes are: benchmarks/bench_shapes.py), and whatever it merges
is sent again whenever any of the rarest paths differs.
"""

from __future__ import annotations

import graphlib
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import get_args

import networkx

from nixery.build.graph import ClosureGraph, name_version
from nixery.config import Config, Layering

# NIXERY_LAYER_BUDGET's default, declared (and explained) in nixery.config.
DEFAULT_BUDGET = Config.layer_budget

# Nixery's thresholds. "MB" is decimal there (100 * 1000000).
POPULARITY_THRESHOLD = 100
BIG_CLOSURE_THRESHOLD = 100 * 1000 * 1000

# CA certificates and /etc/services data go into every image but have almost no reverse
# references in nixpkgs, so popularity counts underrate them. Nixery gives them more than
# glibc (~300k references) so they always stay separate and are merged last. nixpkgs names
# the cacert output `nss-cacert-<version>`; `cacert-` covers a differently named build.
ALWAYS_POPULAR_PREFIXES = ("nss-cacert-", "cacert-", "iana-etc-")
FORCED_POPULARITY = 500_000

# Paths without popularity data count once, as in Nixery: rating by size alone.
UNKNOWN_POPULARITY = 1

# The layerings NIXERY_LAYERING allows, and its default: declared in nixery.config.
LAYERINGS: tuple[Layering, ...] = get_args(Layering)
DEFAULT_LAYERING: Layering = Config.layering


@dataclass(frozen=True)
class Layer:
    paths: tuple[str, ...]  # sorted store paths
    rating: int  # popularity of the group's dominator-tree root x size; merged: sum of ratings
    size: int  # sum of nar sizes


def plan_layers(
    graph: ClosureGraph, popularity: Mapping[str, int], budget: int = DEFAULT_BUDGET
) -> tuple[Layer, ...]:
    """Group every path of `graph` into at most `budget` layers.

    `popularity` maps `name_version(path)` to a reference count; missing keys count as 1.

    Merging: when the dominator tree yields `n > budget` layers, the layers are ordered by
    ascending `(rating, paths)` and the first `n - budget + 1` of them become one layer whose
    rating and size are the sums of theirs. This is what Nixery's merge loop amounts to (it
    folds the lowest layer into the next one and never re-sorts): all the rarely shared,
    small content ends up in a single image-specific layer, while every other layer stays a
    whole dominator subtree that other images can share.

    Output order: descending rating, ties by ascending path tuple, so popular and stable
    layers come first (lowest in the image's layer stack).

    Raises ValueError if `budget < 1`, if a root or reference is not a node, if a node's key
    differs from its `path`, if the references contain a cycle, or if a node is not in the
    closure of the roots.
    """
    closure = _indexed_closure(graph, budget)
    if closure is None:
        return ()
    paths, references, nar_sizes = closure.paths, closure.references, closure.nar_sizes
    closure_sizes = closure.closure_sizes
    popularities = [_popularity(path, popularity) for path in paths]
    separate = [
        i
        for i in range(len(paths))
        if closure_sizes[i] > BIG_CLOSURE_THRESHOLD or popularities[i] >= POPULARITY_THRESHOLD
    ]

    layers = [
        Layer(
            paths=tuple(paths[i] for i in sorted(members)),
            rating=popularities[head] * sum(nar_sizes[i] for i in members),
            size=sum(nar_sizes[i] for i in members),
        )
        for head, members in _dominator_groups(references, closure.roots, separate).items()
    ]
    layers.sort(key=lambda layer: (layer.rating, layer.paths))
    if len(layers) > budget:
        merge_count = len(layers) - budget + 1
        layers = [_merged(layers[:merge_count]), *layers[merge_count:]]
    return tuple(sorted(layers, key=lambda layer: (-layer.rating, layer.paths)))


@dataclass(frozen=True)
class _IndexedClosure:
    """A validated closure with paths numbered in sorted order, references as those numbers."""

    paths: list[str]
    references: list[list[int]]
    nar_sizes: list[int]
    roots: list[int]
    closure_sizes: list[int]


def _indexed_closure(graph: ClosureGraph, budget: int) -> _IndexedClosure | None:
    """None for an empty closure; ValueError for a bad budget or a malformed graph."""
    if budget < 1:
        raise ValueError(f"layer budget must be at least 1, got {budget}")
    paths = _validated_paths(graph)
    if not paths:
        return None
    index = {path: i for i, path in enumerate(paths)}
    references = [
        sorted(index[ref] for ref in graph.nodes[path].references if ref != path) for path in paths
    ]
    nar_sizes = [graph.nodes[path].nar_size for path in paths]
    roots = sorted({index[root] for root in graph.roots})
    closure_sizes = _closure_sizes(references, nar_sizes, roots, paths)
    return _IndexedClosure(paths, references, nar_sizes, roots, closure_sizes)


def _validated_paths(graph: ClosureGraph) -> list[str]:
    for key, info in graph.nodes.items():
        if key != info.path:
            raise ValueError(f"node {key!r} describes another path: {info.path!r}")
        for ref in info.references:
            if ref not in graph.nodes:
                raise ValueError(f"{key} references {ref}, which is not in the closure")
    for root in graph.roots:
        if root not in graph.nodes:
            raise ValueError(f"root {root} is not in the closure")
    return sorted(graph.nodes)


def _popularity(path: str, popularity: Mapping[str, int]) -> int:
    key = name_version(path)
    if key.startswith(ALWAYS_POPULAR_PREFIXES):
        return FORCED_POPULARITY
    return popularity.get(key, UNKNOWN_POPULARITY)


def _closure_sizes(
    references: list[list[int]], nar_sizes: list[int], roots: list[int], paths: list[str]
) -> list[int]:
    """Runtime closure size of every path (Nixery's `closureSize`), as integer bitsets."""
    sorter = graphlib.TopologicalSorter({i: refs for i, refs in enumerate(references)})
    try:
        dependencies_first = list(sorter.static_order())
    except graphlib.CycleError as error:
        cycle = " -> ".join(paths[i] for i in error.args[1])
        raise ValueError(f"store path references form a cycle: {cycle}") from error

    closures = [0] * len(paths)
    for i in dependencies_first:
        closure = 1 << i
        for ref in references[i]:
            closure |= closures[ref]
        closures[i] = closure

    reachable = 0
    for root in roots:
        reachable |= closures[root]
    unreachable = ~reachable & ((1 << len(paths)) - 1)
    if unreachable:
        orphan = paths[(unreachable & -unreachable).bit_length() - 1]
        raise ValueError(f"{orphan} is not in the closure of the roots")

    byte_tables = _byte_size_tables(nar_sizes)
    byte_count = len(byte_tables)
    return [
        sum(
            table[byte]
            for table, byte in zip(byte_tables, closure.to_bytes(byte_count, "little"), strict=True)
            if byte
        )
        for closure in closures
    ]


def _byte_size_tables(nar_sizes: list[int]) -> list[list[int]]:
    """For byte position p and byte value b: the summed size of the paths b selects there.

    Summing a bitset a byte at a time instead of a bit at a time keeps closure sizes of a
    few thousand paths in the tens of milliseconds.
    """
    tables = []
    for start in range(0, len(nar_sizes), 8):
        table = [0] * 256
        for byte in range(1, 256):
            lowest = (byte & -byte).bit_length() - 1
            index = start + lowest
            table[byte] = table[byte & (byte - 1)] + (
                nar_sizes[index] if index < len(nar_sizes) else 0
            )
        tables.append(table)
    return tables


def _dominator_groups(
    references: list[list[int]], roots: Iterable[int], separate: Iterable[int]
) -> dict[int, list[int]]:
    """Each direct child of the synthetic root in the dominator tree -> the paths it dominates."""
    synthetic_root = len(references)
    dependency_graph: networkx.DiGraph[int] = networkx.DiGraph()
    dependency_graph.add_node(synthetic_root)
    dependency_graph.add_edges_from((synthetic_root, i) for i in sorted({*roots, *separate}))
    dependency_graph.add_edges_from((i, ref) for i, refs in enumerate(references) for ref in refs)
    immediate_dominator = networkx.immediate_dominators(dependency_graph, synthetic_root)

    dominated: dict[int, list[int]] = {i: [] for i in range(synthetic_root + 1)}
    for node in range(synthetic_root):
        dominated[immediate_dominator[node]].append(node)
    groups = {}
    for head in dominated[synthetic_root]:
        members = [head]
        for member in members:  # grows while iterating: a breadth-first walk of the subtree
            members.extend(dominated[member])
        groups[head] = members
    return groups


def _merged(layers: list[Layer]) -> Layer:
    return Layer(
        paths=tuple(sorted(path for layer in layers for path in layer.paths)),
        rating=sum(layer.rating for layer in layers),
        size=sum(layer.size for layer in layers),
    )


def plan_per_path_layers(
    graph: ClosureGraph, popularity: Mapping[str, int], budget: int = DEFAULT_BUDGET
) -> tuple[Layer, ...]:
    """One layer per store path; beyond `budget`, the lowest-rated paths share the last layer.

    A path's rating is its popularity (as in `plan_layers`, missing keys count as 1) times its
    nar size, so it depends on the path alone and not on the image: the same paths get their own
    layers in every image. When there are `n > budget` paths, the `budget - 1` highest-rated
    (ties by path) each get a layer and the other `n - budget + 1` are merged into one.

    Output order: descending rating, ties by ascending path tuple; the merged layer, whose
    rating is the sum of its paths', takes its place by the same order.

    Raises ValueError for the same malformed graphs as `plan_layers`.
    """
    # Validated as plan_layers validates: cycles and paths outside the roots' closure are errors.
    closure = _indexed_closure(graph, budget)
    if closure is None:
        return ()
    layers = [
        Layer(
            paths=(path,),
            rating=_popularity(path, popularity) * graph.nodes[path].nar_size,
            size=graph.nodes[path].nar_size,
        )
        for path in closure.paths
    ]
    layers.sort(key=lambda layer: (-layer.rating, layer.paths))
    if len(layers) > budget:
        layers = [*layers[: budget - 1], _merged(layers[budget - 1 :])]
    return tuple(sorted(layers, key=lambda layer: (-layer.rating, layer.paths)))


def prefix_order_key(
    path: str, popularity: Mapping[str, int], nar_size: int, closure_path_count: int
) -> tuple[float, str]:
    """Where a path sits in every image that holds it: a function of the path alone.

    Highest first: nar size (what sharing the path saves) x (1 + ln popularity), over the
    square root of how many paths the path's own runtime closure holds. A path's closure is
    fixed by the path; low-level paths that everything needs have small closures, the
    applications an image is named for large ones, so the paths most likely to differ between
    two images come last. Popularity counts run from 1 to tens of thousands (the C library):
    taken whole, as Nixery's rating takes it, they put every small popular library ahead of
    the big runtimes images share; their logarithm keeps the order they give among paths of a
    size. Of the keys measured on pairs of a real distribution's images
    (benchmarks/bench_shapes.py: Debian 12's graph, 384 pairs, then 384 held out), this one
    sent the least, with and without popularity data. Ties by the path itself.
    """
    # A count below 1 (a hand-made popularity file may hold one) weighs as an unknown path.
    weight = 1 + math.log(max(_popularity(path, popularity), UNKNOWN_POPULARITY))
    return (-weight * nar_size / math.sqrt(closure_path_count), path)


def plan_prefix_layers(
    graph: ClosureGraph, popularity: Mapping[str, int], budget: int = DEFAULT_BUDGET
) -> tuple[Layer, ...]:
    """One layer per store path in an order that depends on each path alone; beyond `budget`,
    the paths that sort last share the last layer.

    Docker's graph-driver store reuses a layer only when every layer below it is the same
    (chain ID). Because a path's position depends on the path alone (`prefix_order_key`), two
    images list their common popular paths in the same order, so their layer lists share a
    leading run up to the first path one has and the other lacks; the rare, image-specific
    paths (what usually differs) sit last, merged into one layer when the image has more paths
    than the budget. Content-addressed clients (containerd, podman, modern Docker) reuse every
    unmerged layer, as with `plan_per_path_layers`.

    Output order: `prefix_order_key` of each layer's path; the merged layer last. Its rating
    is the sum of its paths' ratings (popularity x nar size), as for the other groupings.

    Raises ValueError for the same malformed graphs as `plan_layers`.
    """
    closure = _indexed_closure(graph, budget)
    if closure is None:
        return ()
    order = _prefix_order(closure, popularity)
    layers = [
        Layer(
            paths=(closure.paths[i],),
            rating=_popularity(closure.paths[i], popularity) * closure.nar_sizes[i],
            size=closure.nar_sizes[i],
        )
        for i in order
    ]
    if len(layers) > budget:
        layers = [*layers[: budget - 1], _merged(layers[budget - 1 :])]
    return tuple(layers)


# The chunked grouping's mean chunk, in nar bytes (uncompressed; the layers are gzipped). Docker
# 20.10 spends about 0.07-0.1 s on every layer it pulls, even on loopback, what about 1 MB takes
# at 100 Mbit/s: chunks of a couple of MB of store paths keep the per-layer cost near the
# download a chunk can save. On the 24 incremental pairs (benchmarks/bench_incremental.py, run
# once per size), median chain-prefix excess and most layers per image at budget 8: 1 MB 4.94
# and 9, 2 MB 4.94 and 8, 4 MB 11.84 and 5, 8 MB 18.50 and 3.
CHUNK_BYTES = 2 * 1000 * 1000


def chunk_ends_after(path: str, nar_size: int, chunk_bytes: int = CHUNK_BYTES) -> bool:
    """Whether a chunk ends after `path`, in every image that holds it: decided by the path.

    A content-defined cut, weighted by size: the path ends a chunk with probability
    `nar_size / chunk_bytes` (always, when it is at least `chunk_bytes`), drawn from the sha256
    of the store path, so every nar byte is as likely as any other to close a chunk and chunks
    average `chunk_bytes`. Two images that list the same paths in the same order cut them at the
    same places; after a path one image lacks, the cuts fall in step again at the next shared
    cut point.
    """
    draw = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big")
    return draw * chunk_bytes < nar_size * (1 << 64)


def plan_chunked_layers(
    graph: ClosureGraph,
    popularity: Mapping[str, int],
    budget: int = DEFAULT_BUDGET,
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[Layer, ...]:
    """The paths in the order of `plan_prefix_layers`, cut into a few layers of several MB at
    cut points that depend on each path alone; beyond `budget`, the last chunks are merged.

    Docker pays for every layer (about 0.1 s in dockerd 20.10, on any link) and reuses a layer
    only when every layer below it is the same (chain ID). One layer per path pays the first
    cost dozens of times, one layer per image loses all reuse. Here a path's position
    (`prefix_order_key`) and whether a chunk ends after it (`chunk_ends_after`) depend on the
    path alone, so two images sharing a base share their leading chunks, up to the chunk that
    holds the first path one has and the other lacks; the rare, image-specific paths sort last.
    An image of N nar bytes gets about N / `CHUNK_BYTES` + 1 layers, at most `budget`: when
    there are more chunks, the first `budget - 1` stay and the rest (the rarest paths) share
    the last layer. Content-addressed clients (containerd, podman) also reuse chunks after a
    difference, once the cuts fall in step again.

    Output order: the chunks in path order. A chunk's rating is the sum of its paths' ratings
    (popularity x nar size), as for merged layers of the other groupings.

    Raises ValueError for the same malformed graphs as `plan_layers`.
    """
    closure = _indexed_closure(graph, budget)
    if closure is None:
        return ()
    order = _prefix_order(closure, popularity)
    chunks: list[list[int]] = [[]]
    for i in order:
        chunks[-1].append(i)
        # At the budget, the last layer takes every remaining path.
        if len(chunks) < budget and chunk_ends_after(
            closure.paths[i], closure.nar_sizes[i], chunk_bytes
        ):
            chunks.append([])
    if not chunks[-1]:
        chunks.pop()
    return tuple(
        Layer(
            paths=tuple(sorted(closure.paths[i] for i in chunk)),
            rating=sum(
                _popularity(closure.paths[i], popularity) * closure.nar_sizes[i] for i in chunk
            ),
            size=sum(closure.nar_sizes[i] for i in chunk),
        )
        for chunk in chunks
    )


def _prefix_order(closure: _IndexedClosure, popularity: Mapping[str, int]) -> list[int]:
    """The closure's path indices in `prefix_order_key` order."""
    counts = _closure_path_counts(closure.references)
    return sorted(
        range(len(closure.paths)),
        key=lambda i: prefix_order_key(
            closure.paths[i], popularity, closure.nar_sizes[i], counts[i]
        ),
    )


def _closure_path_counts(references: list[list[int]]) -> list[int]:
    """How many paths each path's runtime closure holds, itself included (acyclic input)."""
    closures = [0] * len(references)
    for i in graphlib.TopologicalSorter(dict(enumerate(references))).static_order():
        closure = 1 << i
        for ref in references[i]:
            closure |= closures[ref]
        closures[i] = closure
    return [closure.bit_count() for closure in closures]


Planner = Callable[[ClosureGraph, Mapping[str, int], int], tuple[Layer, ...]]
PLANNERS: dict[Layering, Planner] = {
    "chunked": plan_chunked_layers,
    "prefix": plan_prefix_layers,
    "nixery": plan_layers,
    "per-path": plan_per_path_layers,
}
