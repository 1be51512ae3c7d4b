"""Case-insensitive lookup: 64 names that miss their exact attribute cost about what 64 exact
hits do, because resolve.nix builds one lowercase index per attribute set, not one per name.

    python -m benchmarks.bench_lookup [--quick]

Both cases run `Nix.resolve` (one nix-instantiate, as a build does) on the same package set: 64
exact top-level hits (derivations, instantiated), and 64 lowercase names that match nothing, so
each one consults the lowercase index. On the bundled test set (about 50 top-level attributes)
and on it widened by 12,000 attributes (benchmarks/pkgs/wide.nix), nixpkgs' breadth, where
lowercasing every name again per miss would cost seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.report import REPO
from nixery.build.contract import NixSource
from nixery.build.nix import Nix

NAMES = 64
TARGET_RATIO = 1.5  # misses / hits
TOP_LEVEL_PACKAGES = [
    "busybox",
    "hello",
    "bashInteractive",
    "coreutils",
    "moreutils",
    "nano",
    "cacert",
    "iana-etc",
    "libbase",
    "libfoo",
    "libbar",
    "app",
    "tool",
    "multi",
    "docsOnly",
    "SDL2",
    "_1password",
    "emptydir",
]
SETS = {
    "test set (tests/pkgs)": REPO / "tests" / "pkgs",
    "test set + 12,000 attributes": REPO / "benchmarks" / "pkgs" / "wide.nix",
}


def _timed_resolve(nix: Nix, source: NixSource, names: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    resolution = nix.resolve(source, names, "x86_64-linux", time.monotonic() + 600)
    return time.perf_counter() - started, len(resolution.packages)


def measure(quick: bool) -> list[tuple[str, float, float]]:
    """Per package set: median seconds of 64 exact hits and of 64 lowercase misses."""
    rounds = 2 if quick else 5
    hits = [TOP_LEVEL_PACKAGES[i % len(TOP_LEVEL_PACKAGES)] for i in range(NAMES)]
    misses = [f"nosuchpackage{i}" for i in range(NAMES)]
    env = {"NIX_CONFIG": os.environ.get("NIX_CONFIG", "substituters =")}
    rows = []
    with tempfile.TemporaryDirectory() as gcroots:
        nix = Nix(REPO / "nix", Path(gcroots), timeout=600, extra_env=env)
        for label, path in SETS.items():
            source = NixSource("path", str(path))
            _timed_resolve(nix, source, hits[:1])  # warm the evaluator's file cache
            hit_times, miss_times = [], []
            for _ in range(rounds):
                seconds, found = _timed_resolve(nix, source, hits)
                assert found == NAMES, f"{label}: {found} of {NAMES} hits resolved"
                hit_times.append(seconds)
                seconds, found = _timed_resolve(nix, source, misses)
                assert found == 0
                miss_times.append(seconds)
            rows.append((label, statistics.median(hit_times), statistics.median(miss_times)))
    return rows


def report(rows: list[tuple[str, float, float]], quick: bool) -> str:
    lines = [
        "## Case-insensitive lookup",
        "",
        f"`Nix.resolve` of {NAMES} top-level names in one evaluation, median of "
        f"{2 if quick else 5} rounds; target: misses within {TARGET_RATIO}x of hits.",
        "",
        f"| package set | {NAMES} exact hits | {NAMES} lowercase misses | misses / hits |",
        "|---|---|---|---|",
    ]
    for label, hits, misses in rows:
        verdict = "ok" if misses <= TARGET_RATIO * hits else "OVER TARGET"
        lines.append(
            f"| {label} | {hits * 1000:.0f} ms | {misses * 1000:.0f} ms | "
            f"{misses / hits:.2f} ({verdict}) |"
        )
    return "\n".join(lines) + "\n"


def run(quick: bool) -> str:
    return report(measure(quick), quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds (CI)")
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
