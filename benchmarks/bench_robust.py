"""Serving under hostile load: `nixery serve` (waitress) beside the gunicorn gthread model it
replaced, on the same application, storage layout and settings.

    python -m benchmarks.bench_robust [--quick]

Per server: `shell/hello` is built first (warm). Then 256 connections trickle request headers
(one byte every 0.5 s, reopened when the server closes them) and 32 requests wait for distinct
cold builds (derivations that sleep; 4 build at once, the rest queue). Meanwhile warm manifest
GETs run one after another, each on a new connection, with a 5 s timeout. Reported: their
latency, failures, the server's resident memory, then the shutdown: SIGTERM, how long until the
server is gone, what the waiting cold requests were answered, and which Nix processes outlived
the server.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from benchmarks._serving import OFFLINE_NIX_CONFIG, TEST_PKGS
from benchmarks._slowload import (
    ColdRequests,
    Tricklers,
    WarmResult,
    kill_marked,
    processes_marked,
    rss_mb,
    slow_package_set,
    warm_gets,
)
from nixery.cloud.devstack import ManagedProcess, free_port, spawn

TRICKLERS = 256
COLD_BUILDS = 32
WARM_PATH = "/v2/shell/hello/manifests/latest"
TARGET_P99_MS = 50.0
TARGET_RSS_MB = 300.0
SERVERS = {
    "nixery serve (waitress)": ["-m", "nixery", "serve", "--host", "127.0.0.1"],
    "gunicorn gthread, 16 threads": ["-m", "benchmarks._gthread"],
}


@dataclass(frozen=True)
class Outcome:
    server: str
    warm: WarmResult
    attempted: int
    rss_mb: float
    peak_rss_mb: float
    exit_seconds: float
    cold_statuses: dict[str, int | str]
    orphans: int


def start(server: str, scratch: Path, pkgs: Path) -> ManagedProcess:
    os.environ.setdefault("NIX_CONFIG", OFFLINE_NIX_CONFIG)
    port = free_port()
    env = {
        **os.environ,
        "NIXERY_PKGS_PATH": str(pkgs),
        "STORAGE_PATH": str(scratch / "storage"),
        "PORT": str(port),
        "NIXERY_CLIENT_BUILD_LIMIT": str(COLD_BUILDS * 2),
        "NIX_TIMEOUT": "300",
    }
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return spawn(server, [sys.executable, *SERVERS[server]], port, scratch / "server.log", env)


def measure_one(server: str, warm_requests: int, scratch: Path) -> Outcome:
    pkgs = scratch / "pkgs"
    marker = slow_package_set(pkgs, TEST_PKGS, COLD_BUILDS)
    process = start(server, scratch, pkgs)
    try:
        requests.get(process.url + WARM_PATH, timeout=900).raise_for_status()
        cold_paths = [f"/v2/slow{index}/manifests/latest" for index in range(COLD_BUILDS)]
        with Tricklers(process.port, TRICKLERS):
            cold = ColdRequests(process.port, cold_paths, timeout=600).start()
            # Let the cold requests reach Nix (evaluation takes a moment each).
            time.sleep(5.0)
            warm = warm_gets(process.port, WARM_PATH, warm_requests, timeout=5.0)
            rss, peak = rss_mb(process.pid)
            stopping = time.monotonic()
            process.stop(grace_seconds=30.0)
            exit_seconds = time.monotonic() - stopping
        cold.join(timeout=30.0)
        time.sleep(1.0)
        orphans = len(processes_marked(marker))
    finally:
        process.stop()
        kill_marked(marker)
    attempted = len(warm.latencies_ms) + warm.failures
    return Outcome(server, warm, attempted, rss, peak, exit_seconds, dict(cold.statuses), orphans)


def measure(quick: bool) -> list[Outcome]:
    warm_requests = 100 if quick else 500
    outcomes = []
    for server in SERVERS:
        with tempfile.TemporaryDirectory(prefix="nixery-bench-robust-") as name:
            outcomes.append(measure_one(server, warm_requests, Path(name)))
    return outcomes


def _statuses(statuses: dict[str, int | str]) -> str:
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[str(status)] = counts.get(str(status), 0) + 1
    return ", ".join(f"{count}x {status}" for status, count in sorted(counts.items())) or "none"


def report(outcomes: list[Outcome], quick: bool) -> str:
    lines = [
        "## Hostile load: slow clients and waiting builds",
        "",
        f"{TRICKLERS} connections trickle headers and {COLD_BUILDS} requests wait for distinct "
        "cold builds (4 build at once) while warm manifest GETs of `shell/hello` run one by "
        "one on new connections (5 s timeout; after 5 failures the rest are skipped). Then "
        "SIGTERM: time until the server is gone, the answers the waiting cold requests got, "
        "and the build processes still alive after it (orphans)."
        + (" **Quick mode**: 100 warm GETs." if quick else " 500 warm GETs."),
        "",
        "| server | warm GETs ok / tried | p50 ms | p99 ms | RSS MB (peak) | exit s "
        "| cold requests answered | orphans |",
        "|---|--:|--:|--:|--:|--:|---|--:|",
    ]
    for outcome in outcomes:
        warm = outcome.warm
        lines.append(
            f"| {outcome.server} | {len(warm.latencies_ms)} / {outcome.attempted} "
            f"| {warm.p50_ms:.1f} | {warm.p99_ms:.1f} "
            f"| {outcome.rss_mb:.0f} ({outcome.peak_rss_mb:.0f}) | {outcome.exit_seconds:.1f} "
            f"| {_statuses(outcome.cold_statuses)} | {outcome.orphans} |"
        )
    ours = outcomes[0]
    met_latency = ours.warm.failures == 0 and ours.warm.p99_ms < TARGET_P99_MS
    met_rss = ours.peak_rss_mb < TARGET_RSS_MB
    lines += [
        "",
        f"- Target: warm GET p99 < {TARGET_P99_MS:.0f} ms and none fails: "
        f"{ours.warm.p99_ms:.1f} ms, {ours.warm.failures} failed, "
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
    parser.add_argument("--quick", action="store_true", help="100 warm GETs per server")
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
