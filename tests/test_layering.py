"""The layering algorithm on hand-made and random closure graphs."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Mapping

import pytest
from benchmarks.shapes import SHELL
from benchmarks.shapes import load as load_shapes

from nixery.build.graph import ClosureGraph, StorePathInfo, name_version
from nixery.build.layering import (
    BIG_CLOSURE_THRESHOLD,
    CHUNK_BYTES,
    DEFAULT_BUDGET,
    FORCED_POPULARITY,
    LAYERINGS,
    PLANNERS,
    POPULARITY_THRESHOLD,
    Layer,
    chunk_ends_after,
    plan_chunked_layers,
    plan_layers,
    plan_per_path_layers,
    plan_prefix_layers,
)
from nixery.config import Layering

MB = 1000 * 1000


def store_path(name: str) -> str:
    # The hash comes first in a store path, so sorting by path is not sorting by name.
    return f"/nix/store/{hashlib.sha256(name.encode()).hexdigest()[:32]}-{name}"


def make_graph(
    roots: list[str], references: Mapping[str, list[str]], sizes: Mapping[str, int] | None = None
) -> ClosureGraph:
    """Graph over short names; every name defaults to 1000 bytes."""
    names = set(roots) | set(references) | {ref for refs in references.values() for ref in refs}
    sizes = sizes or {}
    nodes = {
        store_path(name): StorePathInfo(
            path=store_path(name),
            nar_size=sizes.get(name, 1000),
            references=tuple(sorted(store_path(ref) for ref in references.get(name, []))),
        )
        for name in sorted(names)
    }
    return ClosureGraph(roots=tuple(sorted(store_path(root) for root in roots)), nodes=nodes)


def groups(layers: tuple[Layer, ...]) -> set[frozenset[str]]:
    return {frozenset(name_version(path) for path in layer.paths) for layer in layers}


def named_layers(layers: tuple[Layer, ...]) -> list[tuple[set[str], int, int]]:
    return [({name_version(p) for p in layer.paths}, layer.rating, layer.size) for layer in layers]


# Nixery's documented example (layers/layers.go): the image asks for A, B, C and D.
NIXERY_EXAMPLE_REFERENCES = {"A": ["E"], "B": ["E"], "C": ["E", "D"], "D": ["F", "G"]}


def test_nixery_example_without_popularity_or_size() -> None:
    graph = make_graph(["A", "B", "C", "D"], NIXERY_EXAMPLE_REFERENCES)
    # E is shared by A, B and C, so none of them dominates it: E is a layer of its own.
    # D is requested itself (and referenced by C), so it heads a layer with what only it needs.
    assert groups(plan_layers(graph, {})) == {
        frozenset("A"),
        frozenset("B"),
        frozenset("C"),
        frozenset("E"),
        frozenset("DFG"),
    }


def test_big_node_is_split_out_of_its_dominators_layer() -> None:
    graph = make_graph(["A", "B", "C", "D"], NIXERY_EXAMPLE_REFERENCES, {"G": 150 * MB})
    assert groups(plan_layers(graph, {})) == {
        frozenset("A"),
        frozenset("B"),
        frozenset("C"),
        frozenset("E"),
        frozenset("DF"),
        frozenset("G"),
    }


def test_big_is_measured_on_the_closure_like_nixery() -> None:
    # B itself is small, but with C and D its runtime closure is above the threshold; C and D
    # are not big, so B dominates them.
    references = {"A": ["B"], "B": ["C", "D"]}
    graph = make_graph(["A"], references, {"B": 1 * MB, "C": 60 * MB, "D": 60 * MB})
    assert groups(plan_layers(graph, {})) == {frozenset("A"), frozenset("BCD")}


@pytest.mark.parametrize(("extra", "expected"), [(0, {"ABC"}), (1, {"A", "BC"})])
def test_big_means_strictly_above_the_threshold(extra: int, expected: set[str]) -> None:
    half = BIG_CLOSURE_THRESHOLD // 2
    graph = make_graph(["A"], {"A": ["B"], "B": ["C"]}, {"B": half, "C": half + extra})
    assert groups(plan_layers(graph, {})) == {frozenset(names) for names in expected}


def test_popular_node_is_split_out_of_its_dominators_layer() -> None:
    graph = make_graph(["A"], {"A": ["B"], "B": ["C"]})
    assert groups(plan_layers(graph, {})) == {frozenset("ABC")}
    assert groups(plan_layers(graph, {"C": POPULARITY_THRESHOLD - 1})) == {frozenset("ABC")}
    assert groups(plan_layers(graph, {"C": POPULARITY_THRESHOLD})) == {
        frozenset("AB"),
        frozenset("C"),
    }


def test_cacert_and_iana_etc_always_get_their_own_layers() -> None:
    cacert, iana = "nss-cacert-3.98", "iana-etc-20240318"
    graph = make_graph(["app"], {"app": ["lib", cacert, iana]})
    # Popularity data cannot demote them: Nixery overrides whatever the data says.
    layers = plan_layers(graph, {cacert: 0, iana: 0, "app": 5})
    assert groups(layers) == {
        frozenset(["app", "lib"]),
        frozenset([cacert]),
        frozenset([iana]),
    }
    ratings = {frozenset(name_version(p) for p in layer.paths): layer.rating for layer in layers}
    assert ratings[frozenset([cacert])] == FORCED_POPULARITY * 1000
    assert ratings[frozenset([iana])] == FORCED_POPULARITY * 1000


def test_cacert_without_nss_prefix_is_also_forced() -> None:
    graph = make_graph(["app"], {"app": ["cacert-3.98"]})
    assert groups(plan_layers(graph, {})) == {frozenset(["app"]), frozenset(["cacert-3.98"])}


def test_rating_is_head_popularity_times_group_size() -> None:
    graph = make_graph(["A"], {"A": ["B"]}, {"A": 10, "B": 20})
    # B's popularity does not count: the layer is rated by the path that heads it.
    assert named_layers(plan_layers(graph, {"A": 5, "B": 50})) == [({"A", "B"}, 150, 30)]


def test_missing_popularity_counts_as_one() -> None:
    graph = make_graph(["A"], {}, {"A": 1234})
    assert named_layers(plan_layers(graph, {"unrelated-1.0": 7})) == [({"A"}, 1234, 1234)]


def test_root_referenced_by_another_root_heads_its_own_layer() -> None:
    graph = make_graph(["A", "B"], {"A": ["B"], "B": ["C"]})
    assert groups(plan_layers(graph, {})) == {frozenset("A"), frozenset("BC")}


def test_self_references_are_ignored() -> None:
    path = store_path("A")
    graph = ClosureGraph(roots=(path,), nodes={path: StorePathInfo(path, 10, (path,))})
    assert plan_layers(graph, {}) == (Layer(paths=(path,), rating=10, size=10),)


def test_empty_closure_has_no_layers() -> None:
    assert plan_layers(ClosureGraph(roots=(), nodes={}), {}) == ()


# Five independent roots rated 100, 200, 300, 400, 500 (no popularity data: rating = size).
FIVE_ROOTS = make_graph(list("VWXYZ"), {}, {"V": 100, "W": 200, "X": 300, "Y": 400, "Z": 500})


def test_within_budget_nothing_is_merged() -> None:
    assert named_layers(plan_layers(FIVE_ROOTS, {}, budget=5)) == [
        ({"Z"}, 500, 500),
        ({"Y"}, 400, 400),
        ({"X"}, 300, 300),
        ({"W"}, 200, 200),
        ({"V"}, 100, 100),
    ]


def test_over_budget_the_lowest_rated_layers_merge_into_one() -> None:
    # 5 layers, budget 3: the 3 lowest-rated become one layer, rated by the sum of ratings.
    assert named_layers(plan_layers(FIVE_ROOTS, {}, budget=3)) == [
        ({"V", "W", "X"}, 600, 600),
        ({"Z"}, 500, 500),
        ({"Y"}, 400, 400),
    ]


def test_merge_uses_ratings_not_sizes() -> None:
    # Ratings V 5000, W 200, X 300, Y 800, Z 500: Z is the biggest but merged, V the smallest
    # but kept, because popularity counts too.
    popularity = {"V": 50, "Y": 2}
    assert named_layers(plan_layers(FIVE_ROOTS, popularity, budget=3)) == [
        ({"V"}, 5000, 100),
        ({"W", "X", "Z"}, 1000, 1000),
        ({"Y"}, 800, 400),
    ]


def test_budget_one_gives_a_single_layer() -> None:
    assert named_layers(plan_layers(FIVE_ROOTS, {}, budget=1)) == [
        ({"V", "W", "X", "Y", "Z"}, 1500, 1500)
    ]


def test_rating_ties_are_broken_by_paths() -> None:
    graph = make_graph(list("PQRS"), {})  # all rated 1000
    by_path = sorted(graph.nodes)
    assert [layer.paths for layer in plan_layers(graph, {}, budget=4)] == [(p,) for p in by_path]
    merged = plan_layers(graph, {}, budget=3)
    # The two first paths merge; the merged layer (2000) comes before the rest (1000).
    assert [layer.paths for layer in merged] == [
        tuple(by_path[:2]),
        (by_path[2],),
        (by_path[3],),
    ]


def test_budgets_bound_the_layer_count() -> None:
    graph = make_graph([f"p{i}" for i in range(100)], {})
    assert len(plan_layers(graph, {})) == DEFAULT_BUDGET
    assert len(plan_layers(graph, {}, 94)) == 94  # Nixery's budget, as NIXERY_LAYER_BUDGET=94


def test_default_budget_keeps_small_images_to_a_few_layers_and_leaves_big_ones_unmerged() -> None:
    """The budget binds only on big images, where `chunked` merges what is past its last cut:
    an image of a real distribution's shapes (Debian's, benchmarks/shapes.py) must not keep a
    large part of itself in that layer, where any change to its rarest paths sends it again."""
    shapes = load_shapes()
    big = shapes.closure([*SHELL, "git", "python3", "openjdk-17-jre-headless", "gcc", "vim"])
    sizes = [layer.size for layer in plan_chunked_layers(big, {})]
    assert sum(sizes) > 500_000_000
    assert sizes[-1] < 0.05 * sum(sizes)
    # What the previous default, 8, did to it: a third of the image in the last layer.
    assert plan_chunked_layers(big, {}, 8)[-1].size > 0.3 * sum(sizes)
    # 100 paths of 50 kB (5 MB): a few chunks, whatever the budget.
    names = [f"p{i}" for i in range(100)]
    small = make_graph(names, {}, dict.fromkeys(names, 50_000))
    assert 2 <= len(plan_chunked_layers(small, {})) <= 6


@pytest.mark.parametrize("budget", [0, -1])
def test_budget_below_one_is_rejected(budget: int) -> None:
    with pytest.raises(ValueError, match="budget"):
        plan_layers(FIVE_ROOTS, {}, budget=budget)


def test_reference_outside_the_closure_is_rejected() -> None:
    a, missing = store_path("A"), store_path("missing")
    graph = ClosureGraph(roots=(a,), nodes={a: StorePathInfo(a, 1, (missing,))})
    with pytest.raises(ValueError, match="missing"):
        plan_layers(graph, {})


def test_root_outside_the_closure_is_rejected() -> None:
    graph = make_graph(["A"], {})
    with pytest.raises(ValueError, match="root"):
        plan_layers(ClosureGraph(roots=(store_path("B"),), nodes=graph.nodes), {})


def test_node_unreachable_from_the_roots_is_rejected() -> None:
    graph = make_graph(["A"], {"A": ["B"], "C": ["B"]})
    with pytest.raises(ValueError, match="-C is not in the closure of the roots"):
        plan_layers(ClosureGraph(roots=(store_path("A"),), nodes=graph.nodes), {})


def test_reference_cycle_is_rejected() -> None:
    graph = make_graph(["A"], {"A": ["B"], "B": ["C"], "C": ["B"]})
    with pytest.raises(ValueError, match="cycle"):
        plan_layers(graph, {})


def test_node_keyed_by_another_path_is_rejected() -> None:
    a, b = store_path("A"), store_path("B")
    graph = ClosureGraph(roots=(a,), nodes={a: StorePathInfo(b, 1, ())})
    with pytest.raises(ValueError, match="another path"):
        plan_layers(graph, {})


def random_graph(seed: int, size: int) -> tuple[ClosureGraph, dict[str, int]]:
    """A DAG shaped like a closure: paths refer to earlier paths, unreferenced paths are roots.

    Most references go to a path nothing refers to yet (a private dependency, which its
    referrer dominates), the others to any earlier path (a shared library).
    """
    rng = random.Random(seed)
    names = [f"pkg{i}-{rng.randint(1, 9)}.{rng.randint(0, 20)}" for i in range(size)]
    unreferenced: list[str] = []
    references: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        chosen: set[str] = set()
        for _ in range(rng.randint(0, 4)):
            if unreferenced and rng.random() < 0.7:
                chosen.add(unreferenced.pop(rng.randrange(len(unreferenced))))
            elif i:
                chosen.add(names[rng.randrange(i)])
        unreferenced = [n for n in unreferenced if n not in chosen]
        unreferenced.append(name)
        references[name] = sorted(chosen)
    # Few distinct sizes, so that many layers tie on rating and tie-breaking matters.
    sizes = {name: rng.choice([1, 2, 5]) * 10 ** rng.randint(3, 7) for name in names}
    popularity = {
        name: rng.choice([1, 5, 50, 99, 100, 5000]) for name in rng.sample(names, size // 10)
    }
    return make_graph(unreferenced, references, sizes), popularity


def brute_force_groups(graph: ClosureGraph, popularity: Mapping[str, int]) -> set[frozenset[str]]:
    """Nixery's grouping from the definition of dominance, without any dominator algorithm."""

    def closure_of(start: set[str], removed: str | None = None) -> set[str]:
        seen: set[str] = set()
        todo = [p for p in start if p != removed]
        while todo:
            path = todo.pop()
            if path not in seen:
                seen.add(path)
                todo.extend(r for r in graph.nodes[path].references if r != removed)
        return seen

    def is_separate(path: str) -> bool:
        key = name_version(path)
        big = sum(graph.nodes[p].nar_size for p in closure_of({path})) > BIG_CLOSURE_THRESHOLD
        return big or popularity.get(key, 1) >= POPULARITY_THRESHOLD

    heads = set(graph.roots) | {path for path in graph.nodes if is_separate(path)}
    # Dominators of p: p itself and every path whose removal cuts p off from the root's children.
    dominators = {
        path: {path} | {d for d in graph.nodes if d != path and path not in closure_of(heads, d)}
        for path in graph.nodes
    }
    # The layer of p is headed by its outermost dominator (the one dominated only by the root).
    grouped: dict[str, set[str]] = {}
    for path, doms in dominators.items():
        (head,) = [d for d in doms if dominators[d] == {d}]
        grouped.setdefault(head, set()).add(name_version(path))
    return {frozenset(members) for members in grouped.values()}


@pytest.mark.parametrize("seed", range(15))
def test_matches_the_definition_of_dominance(seed: int) -> None:
    graph, popularity = random_graph(seed, 40)
    assert groups(plan_layers(graph, popularity, budget=10_000)) == brute_force_groups(
        graph, popularity
    )


def assert_invariants(
    graph: ClosureGraph, layers: tuple[Layer, ...], budget: int, by_rating: bool = True
) -> None:
    assert 1 <= len(layers) <= budget
    placed = [path for layer in layers for path in layer.paths]
    assert len(placed) == len(set(placed)) == len(graph.nodes)
    assert set(placed) == set(graph.nodes)
    for layer in layers:
        assert layer.paths
        assert list(layer.paths) == sorted(layer.paths)
        assert layer.size == sum(graph.nodes[path].nar_size for path in layer.paths)
    if by_rating:
        assert list(layers) == sorted(layers, key=lambda layer: (-layer.rating, layer.paths))


@pytest.mark.parametrize("layering", LAYERINGS)
@pytest.mark.parametrize("budget", [1, 2, 10, DEFAULT_BUDGET, 10_000])
def test_random_closure_invariants(budget: int, layering: Layering) -> None:
    graph, popularity = random_graph(2024, 300)
    layers = PLANNERS[layering](graph, popularity, budget)
    assert_invariants(graph, layers, budget, by_rating=layering not in ("prefix", "chunked"))


def test_prefix_layers_share_a_leading_run_between_images_sharing_a_base() -> None:
    """Docker reuses a layer only if every layer below it is the same: an image-specific path
    must not sit below the paths its images share."""
    one = make_graph(["App1"], {"App1": ["Lib"], "Lib": ["Libc"]})
    two = make_graph(["App1", "App2"], {"App1": ["Lib"], "App2": ["Lib"], "Lib": ["Libc"]})
    first, second = plan_prefix_layers(one, {}), plan_prefix_layers(two, {})
    shared = [layer.paths for layer in first[:2]]
    assert [layer.paths for layer in second[:2]] == shared
    assert {path for paths in shared for path in paths} == {
        path for path in one.nodes if "Lib" in path
    }
    assert plan_prefix_layers(two, {}) == second  # deterministic


def test_prefix_order_weighs_popularity_by_its_logarithm_and_size_first() -> None:
    """A big runtime the images share sorts ahead of a small library however popular; among
    paths of a size, the more popular first; a count of 0 weighs as an unknown path."""
    graph = make_graph(
        ["app"],
        {"app": ["runtime", "libpopular", "librare", "libzero"], "runtime": ["libc"]},
        {"runtime": 100 * MB, "libpopular": 200_000, "librare": 200_000, "libzero": 200_000},
    )
    popularity = {
        name_version(store_path("libpopular")): 50_000,
        name_version(store_path("librare")): 3,
        name_version(store_path("libzero")): 0,
        name_version(store_path("runtime")): 1,
    }
    order = [layer.paths[0] for layer in plan_prefix_layers(graph, popularity, 10_000)]
    names = [path.split("-", 1)[1] for path in order]
    assert names.index("runtime") < names.index("libpopular") < names.index("librare")
    assert names.index("librare") < names.index("libzero")
    # Without data, as with counts of 1 or 0: size over the root of the closure's path count.
    zero = plan_prefix_layers(graph, dict.fromkeys(popularity, 0), 10_000)
    assert [layer.paths for layer in zero] == [
        layer.paths for layer in plan_prefix_layers(graph, {}, 10_000)
    ]


def test_prefix_merges_the_paths_that_sort_last() -> None:
    graph, popularity = random_graph(7, 120)
    full = plan_prefix_layers(graph, popularity, 10_000)
    merged = plan_prefix_layers(graph, popularity, 10)
    assert merged[:9] == full[:9]
    assert set(merged[9].paths) == {path for layer in full[9:] for path in layer.paths}


# The chunked grouping.


def test_a_chunk_ends_after_a_path_by_the_path_alone_and_in_proportion_to_its_size() -> None:
    paths = [store_path(f"p{i}") for i in range(4000)]
    assert all(chunk_ends_after(path, CHUNK_BYTES) for path in paths[:50])
    assert not any(chunk_ends_after(path, 0) for path in paths[:50])
    cuts = sum(chunk_ends_after(path, CHUNK_BYTES // 10) for path in paths)
    assert 300 < cuts < 500  # about one path in ten
    assert [chunk_ends_after(path, 300_000) for path in paths] == [
        chunk_ends_after(path, 300_000) for path in paths
    ]


def test_chunked_is_the_prefix_order_cut_into_chunks() -> None:
    graph, popularity = random_graph(11, 300)
    per_path = plan_prefix_layers(graph, popularity, 10_000)
    chunks = plan_chunked_layers(graph, popularity, 10_000)
    assert 1 < len(chunks) < len(per_path)
    order = [layer.paths[0] for layer in per_path]
    position = {path: i for i, path in enumerate(order)}
    start = 0
    for chunk in chunks:
        members = sorted(chunk.paths, key=position.__getitem__)
        assert members == order[start : start + len(members)]  # consecutive in prefix order
        last = members[-1]
        assert chunk_ends_after(last, graph.nodes[last].nar_size) or chunk is chunks[-1]
        assert not any(chunk_ends_after(p, graph.nodes[p].nar_size) for p in members[:-1])
        start += len(members)


def test_chunked_merges_the_chunks_beyond_the_budget() -> None:
    graph, popularity = random_graph(11, 300)
    full = plan_chunked_layers(graph, popularity, 10_000)
    for budget in (1, 2, 4):
        merged = plan_chunked_layers(graph, popularity, budget)
        assert len(merged) == budget
        assert merged[: budget - 1] == full[: budget - 1]
        assert set(merged[-1].paths) == {p for layer in full[budget - 1 :] for p in layer.paths}


def test_chunked_layers_share_leading_chunks_between_images_sharing_a_base() -> None:
    """Two images over one base: the chunks before the first path one lacks are identical."""
    base = {f"lib{i}": [f"lib{i - 1}"] if i else [] for i in range(40)}
    sizes = {f"lib{i}": 700_000 for i in range(40)} | {"app1": 50_000, "app2": 60_000}
    one = make_graph(["app1"], {**base, "app1": ["lib39"]}, sizes)
    two = make_graph(["app2"], {**base, "app2": ["lib39"]}, sizes)
    first, second = plan_chunked_layers(one, {}, 24), plan_chunked_layers(two, {}, 24)
    assert len(first) > 3
    assert first[:-1] == second[:-1]  # only the chunk with the app differs
    assert first[-1] != second[-1]
    assert plan_chunked_layers(two, {}, 24) == second  # deterministic


def test_unmerged_layers_are_entered_only_through_their_head() -> None:
    graph, popularity = random_graph(7, 300)
    layers = plan_layers(graph, popularity, budget=10_000)
    assert len(layers) > 20  # the random graph is interesting enough to test something
    layer_of = {path: i for i, layer in enumerate(layers) for path in layer.paths}
    entered_from_outside = {path for path in graph.roots}
    for path, info in graph.nodes.items():
        entered_from_outside.update(r for r in info.references if layer_of[r] != layer_of[path])
    for layer in layers:
        entries = entered_from_outside.intersection(layer.paths)
        # Popular or big paths get an edge from the root without being entered from outside.
        assert len(entries) <= 1, layer


def shuffled(graph: ClosureGraph, seed: int) -> ClosureGraph:
    items = list(graph.nodes.items())
    random.Random(seed).shuffle(items)
    return ClosureGraph(roots=graph.roots, nodes=dict(items))


@pytest.mark.parametrize("layering", LAYERINGS)
def test_node_insertion_order_does_not_matter(layering: Layering) -> None:
    plan = PLANNERS[layering]
    graph, popularity = random_graph(11, 300)
    expected = plan(graph, popularity, DEFAULT_BUDGET)
    for seed in range(5):
        reordered_popularity = dict(reversed(list(popularity.items())))
        assert plan(shuffled(graph, seed), reordered_popularity, DEFAULT_BUDGET) == expected


PLAN_IN_SUBPROCESS = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from test_layering import random_graph
    from nixery.build.graph import ClosureGraph
    from nixery.build.layering import PLANNERS

    graph, popularity = random_graph(13, 300)
    # Insert nodes in set order, which differs between hash seeds.
    nodes = {path: graph.nodes[path] for path in set(graph.nodes)}
    print(repr(PLANNERS[sys.argv[2]](ClosureGraph(graph.roots, nodes), popularity, 20)))
    """
)


@pytest.mark.parametrize("layering", LAYERINGS)
def test_same_layers_in_processes_with_different_hash_seeds(layering: Layering) -> None:
    outputs = set()
    insertion_orders = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", PLAN_IN_SUBPROCESS, os.path.dirname(__file__), layering],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.add(run.stdout)
        order = subprocess.run(
            [sys.executable, "-c", "print(list({'a'+str(i) for i in range(50)}))"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        insertion_orders.add(order.stdout)
    assert len(insertion_orders) > 1  # the seeds really do change set order
    graph, popularity = random_graph(13, 300)
    assert outputs == {repr(PLANNERS[layering](graph, popularity, 20)) + "\n"}


# The per-path grouping.


def test_per_path_gives_each_path_its_own_layer_within_the_budget() -> None:
    graph = make_graph(["A", "B"], {"A": ["C"], "B": ["C", "D"]}, {"A": 10, "B": 20, "C": 30})
    assert named_layers(plan_per_path_layers(graph, {}, budget=4)) == [
        ({"D"}, 1000, 1000),
        ({"C"}, 30, 30),
        ({"B"}, 20, 20),
        ({"A"}, 10, 10),
    ]


def test_per_path_over_budget_merges_the_lowest_rated_paths_into_one_layer() -> None:
    # Ratings V 5000, W 200, X 300, Y 800, Z 500; budget 3 keeps V and Y, merges W, X, Z.
    popularity = {"V": 50, "Y": 2}
    assert named_layers(plan_per_path_layers(FIVE_ROOTS, popularity, budget=3)) == [
        ({"V"}, 5000, 100),
        ({"W", "X", "Z"}, 1000, 1000),
        ({"Y"}, 800, 400),
    ]
    assert named_layers(plan_per_path_layers(FIVE_ROOTS, {}, budget=1)) == [
        ({"V", "W", "X", "Y", "Z"}, 1500, 1500)
    ]


def test_per_path_layers_are_the_same_in_every_image_holding_the_path() -> None:
    """What Nixery's grouping loses: B reaches C another way, so C's subtree leaves A's layer."""
    just_a = make_graph(["A"], {"A": ["C"], "C": ["D"]})
    a_and_b = make_graph(["A", "B"], {"A": ["C"], "B": ["C"], "C": ["D"]})
    nixery_a, nixery_ab = plan_layers(just_a, {}), plan_layers(a_and_b, {})
    assert not {layer.paths for layer in nixery_a} <= {layer.paths for layer in nixery_ab}
    per_path_a = plan_per_path_layers(just_a, {})
    per_path_ab = plan_per_path_layers(a_and_b, {})
    assert {layer.paths for layer in per_path_a} <= {layer.paths for layer in per_path_ab}
    assert len(per_path_ab) == 4


def test_per_path_never_exceeds_the_budget_on_random_closures() -> None:
    for seed in range(5):
        graph, popularity = random_graph(seed, 200)
        for budget in (1, 7, DEFAULT_BUDGET, 199, 200, 10_000):
            layers = plan_per_path_layers(graph, popularity, budget)
            assert_invariants(graph, layers, budget)
            assert len(layers) == min(budget, len(graph.nodes))


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (make_graph(["A"], {"A": ["B"], "B": ["C"], "C": ["B"]}), "cycle"),
        (
            ClosureGraph(
                roots=(store_path("A"),), nodes=make_graph(["A"], {"A": ["B"], "C": ["B"]}).nodes
            ),
            "not in the closure of the roots",
        ),
        (
            ClosureGraph(
                roots=(store_path("A"),),
                nodes={store_path("A"): StorePathInfo(store_path("A"), 1, (store_path("X"),))},
            ),
            "not in the closure",
        ),
    ],
)
def test_per_path_rejects_what_plan_layers_rejects(graph: ClosureGraph, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_per_path_layers(graph, {})
    with pytest.raises(ValueError, match=message):
        plan_layers(graph, {})
    with pytest.raises(ValueError, match="budget"):
        plan_per_path_layers(FIVE_ROOTS, {}, budget=0)


def test_the_config_names_every_layering() -> None:
    from nixery.config import SETTING, Config

    assert set(SETTING["layering"].choices) == set(PLANNERS) == set(LAYERINGS)
    assert Config().layering == "chunked"
