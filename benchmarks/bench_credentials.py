"""Credential floods: bad robot logins against a team-mode `nixery serve`.

    python -m benchmarks.bench_credentials [--quick]

A team registry with one robot is started and `shell/hello` built with the robot's good token
(so that token's verdict is cached, as in a running CI pull). Then 50 clients send bad robot
logins without pause, each a fresh token so each costs a real scrypt check (16 MiB, about 50 ms),
from a process of their own; meanwhile good requests (the manifest, the verified token) run one
after another on new connections. Reported: the good requests' latency, the server's resident
memory (before, peak, and after the flood), how the bad logins were answered. The same server
runs with glibc's default arena count (8 per core, what `nixery serve` had before it capped
them) for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from benchmarks._credflood import basic, flooding, gets_for
from benchmarks._serving import OFFLINE_NIX_CONFIG, TEST_PKGS
from benchmarks._slowload import WarmResult, rss_mb
from nixery.auth.access import hash_robot_token, new_robot_token
from nixery.cloud.devstack import ManagedProcess, free_port, spawn

FLOOD_CLIENTS = 50
ROBOT = "ci-bot"
GOOD_PATH = "/v2/shell/hello/manifests/latest"
TARGET_P99_MS = 50.0
TARGET_RSS_MB = 150.0
GLIBC_DEFAULT_ARENAS = 8 * (os.cpu_count() or 1)
VARIANTS: Mapping[str, Mapping[str, str]] = {
    "nixery serve (2 arenas, 1 scrypt at once)": {},
    f"glibc default arenas ({GLIBC_DEFAULT_ARENAS})": {
        "MALLOC_ARENA_MAX": str(GLIBC_DEFAULT_ARENAS)
    },
}


@dataclass(frozen=True)
class Outcome:
    variant: str
    good: WarmResult
    rss_before_mb: float
    peak_rss_mb: float
    rss_after_mb: float
    flood: dict[str, int]


def team_env(scratch: Path, token: str) -> dict[str, str]:
    return {
        "NIXERY_PKGS_PATH": str(TEST_PKGS),
        "STORAGE_PATH": str(scratch / "storage"),
        "NIXERY_ACCESS": "team",
        "NIXERY_ROBOT_TOKENS": hash_robot_token(ROBOT, token).line(),
    }


def start(scratch: Path, env: Mapping[str, str]) -> ManagedProcess:
    os.environ.setdefault("NIX_CONFIG", OFFLINE_NIX_CONFIG)
    port = free_port()
    environment = {**os.environ, "PORT": str(port), **env}
    environment.pop("MALLOC_ARENA_MAX", None)
    environment.update(env)
    root = str(Path(__file__).resolve().parent.parent)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [root, environment.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "nixery", "serve", "--host", "127.0.0.1"]
    return spawn("nixery serve", command, port, scratch / "server.log", environment)


def measure_one(variant: str, seconds: float, scratch: Path) -> Outcome:
    token = new_robot_token()
    good = {"Authorization": basic(ROBOT, token)}
    process = start(scratch, {**team_env(scratch, token), **VARIANTS[variant]})
    try:
        requests.get(process.url + GOOD_PATH, headers=good, timeout=900).raise_for_status()
        rss_before, _ = rss_mb(process.pid)
        counts = scratch / "flood.json"
        with flooding(process.port, FLOOD_CLIENTS, seconds, counts):
            result = gets_for(process.port, GOOD_PATH, good, seconds - 4.0, timeout=10.0)
            _, peak = rss_mb(process.pid)
        # What the server keeps once the flood is over.
        time.sleep(2.0)
        rss_after, peak = rss_mb(process.pid)
        flood = json.loads(counts.read_text() or "{}")
    finally:
        process.stop()
    return Outcome(variant, result, rss_before, peak, rss_after, flood)


def measure(quick: bool) -> list[Outcome]:
    seconds = 15.0 if quick else 40.0
    outcomes = []
    for variant in VARIANTS:
        with tempfile.TemporaryDirectory(prefix="nixery-bench-credentials-") as name:
            outcomes.append(measure_one(variant, seconds, Path(name)))
    return outcomes


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{count}x {status}" for status, count in sorted(counts.items())) or "none"


def report(outcomes: list[Outcome], quick: bool) -> str:
    lines = [
        "## Credential floods: bad robot logins",
        "",
        f"{FLOOD_CLIENTS} clients send bad robot logins without pause (a fresh token each, so "
        "each costs a scrypt check) from a process of their own, while good requests (the "
        "`shell/hello` manifest with the robot's already-verified token) run one by one on new "
        f"connections. {'**Quick mode**: 15 s' if quick else '40 s'} of flood per row. "
        "Memory is the server's resident set: before the flood, its peak, and 2 s after.",
        "",
        "| server | good requests ok / tried | p50 ms | p99 ms | RSS MB before / peak / after "
        "| bad logins answered |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for outcome in outcomes:
        good = outcome.good
        tried = len(good.latencies_ms) + good.failures
        lines.append(
            f"| {outcome.variant} | {len(good.latencies_ms)} / {tried} "
            f"| {good.p50_ms:.1f} | {good.p99_ms:.1f} "
            f"| {outcome.rss_before_mb:.0f} / {outcome.peak_rss_mb:.0f} / "
            f"{outcome.rss_after_mb:.0f} | {_counts(outcome.flood)} |"
        )
    ours = outcomes[0]
    met_latency = ours.good.failures == 0 and ours.good.p99_ms < TARGET_P99_MS
    met_rss = ours.peak_rss_mb < TARGET_RSS_MB
    lines += [
        "",
        f"- Target: good requests p99 < {TARGET_P99_MS:.0f} ms, none failing: "
        f"{ours.good.p99_ms:.1f} ms, {ours.good.failures} failed, "
        f"{'met' if met_latency else '**not met**'}.",
        f"- Target: server RSS < {TARGET_RSS_MB:.0f} MB: peak {ours.peak_rss_mb:.0f} MB, "
        f"{'met' if met_rss else '**not met**'}.",
        "",
    ]
    return "\n".join(lines)


def run(quick: bool) -> str:
    return report(measure(quick), quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 s of flood per row")
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
