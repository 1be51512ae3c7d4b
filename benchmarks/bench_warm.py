"""Warm path: `nixery serve` against docker-registry (CNCF distribution 2.8) serving the same image.

    python -m benchmarks.bench_warm [--quick]

nixery builds the image once from the bundled test package set; skopeo copies it, digests
preserved, into docker-registry. Then each request kind runs against both registries in turn,
at 1 and 32 keep-alive connections on loopback: GET requests with wrk, HEAD requests with
ApacheBench (`ab -i -k`), because wrk's response parser waits for a body after a HEAD. The
machine is shared, so each cell runs several rounds, alternating the registries, and reports the
median of each figure over the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

from benchmarks._serving import (
    LoadResult,
    copy_image,
    require_tool,
    run_ab_head,
    run_wrk,
    start_distribution,
    start_nixery,
)
from nixery.cloud.devstack import ManagedProcess
from nixery.oci import OCI_MANIFEST

IMAGE = "shell/hello"
CONNECTIONS = (1, 32)
TARGET_RPS_RATIO = 0.5  # warm manifest GET at 32 connections, nixery / docker-registry
TARGET_P99_MS = 10.0  # warm manifest GET at 1 connection


@dataclass(frozen=True)
class Case:
    label: str
    method: str
    path: str


@dataclass(frozen=True)
class Row:
    case: Case
    connections: int
    nixery: LoadResult
    distribution: LoadResult

    @property
    def ratio(self) -> float:
        return self.nixery.rps / self.distribution.rps


def _cases(nixery: ManagedProcess) -> list[Case]:
    response = requests.get(
        f"{nixery.url}/v2/{IMAGE}/manifests/latest", headers={"Accept": OCI_MANIFEST}, timeout=900
    )
    response.raise_for_status()
    digest = response.headers["Docker-Content-Digest"]
    largest = max(response.json()["layers"], key=lambda layer: layer["size"])
    manifests = f"/v2/{IMAGE}/manifests"
    blob = f"/v2/{IMAGE}/blobs/{largest['digest']}"
    size = f"{largest['size'] / 1e6:.2f} MB"
    return [
        Case("manifest GET by tag", "GET", f"{manifests}/latest"),
        Case("manifest HEAD by tag", "HEAD", f"{manifests}/latest"),
        Case("manifest GET by digest", "GET", f"{manifests}/{digest}"),
        Case("manifest HEAD by digest", "HEAD", f"{manifests}/{digest}"),
        Case(f"blob HEAD ({size})", "HEAD", blob),
        Case(f"blob GET ({size})", "GET", blob),
    ]


def _load(
    registry: ManagedProcess, case: Case, connections: int, seconds: float, scratch: Path
) -> LoadResult:
    url = registry.url + case.path
    if case.method == "HEAD":
        result = run_ab_head(url, connections, seconds, scratch)
    else:
        result = run_wrk(url, case.method, connections, seconds, scratch)
    if result.errors or not result.requests:
        raise RuntimeError(f"{registry.name} {case.label}: {result.errors} errors, {result}")
    return result


def _median(results: list[LoadResult]) -> LoadResult:
    return LoadResult(
        requests=round(statistics.median(r.requests for r in results)),
        errors=sum(r.errors for r in results),
        seconds=statistics.median(r.seconds for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        bytes_read=round(statistics.median(r.bytes_read for r in results)),
    )


def measure(quick: bool) -> tuple[list[Row], float, int]:
    for tool, package in (("wrk", "wrk"), ("ab", "apache2-utils"), ("skopeo", "skopeo")):
        require_tool(tool, package)
    seconds, rounds = (1.0, 1) if quick else (3.0, 3)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nixery-bench-warm-") as name:
        scratch = Path(name)
        nixery = start_nixery(scratch)
        try:
            distribution = start_distribution(scratch)
            try:
                cases = _cases(nixery)
                copy_image(nixery, distribution, IMAGE)
                for case in cases:
                    for connections in CONNECTIONS:
                        ours, theirs = [], []
                        for _ in range(rounds):
                            ours.append(_load(nixery, case, connections, seconds, scratch))
                            theirs.append(_load(distribution, case, connections, seconds, scratch))
                        rows.append(Row(case, connections, _median(ours), _median(theirs)))
            finally:
                distribution.stop()
        finally:
            nixery.stop()
    return rows, seconds, rounds


def _verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def report(rows: list[Row], seconds: float, rounds: int, quick: bool) -> str:
    lines = [
        "## Warm path",
        "",
        f"`nixery serve` (1 process, waitress) and docker-registry serving `{IMAGE}` "
        "(the same bytes: copied with `skopeo copy --preserve-digests`), both on loopback with "
        f"their shipped logging. Each cell: {rounds} round(s) of {seconds:.0f} s per registry, "
        "alternating, median of each figure over the rounds. GET "
        "load: wrk (1 thread at 1 connection, 2 threads at 32); HEAD load: `ab -i -k`. "
        "Latencies in ms; ratio = nixery rps / docker-registry rps."
        + (" **Quick mode**: one 1 s round, figures indicative only." if quick else ""),
        "",
        "| request | conns | nixery rps | p50 | p99 | docker-registry rps | p50 | p99 | ratio |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        ours, theirs = row.nixery, row.distribution
        lines.append(
            f"| {row.case.label} | {row.connections} | {ours.rps:,.0f} | {ours.p50_ms:.2f} "
            f"| {ours.p99_ms:.2f} | {theirs.rps:,.0f} | {theirs.p50_ms:.2f} "
            f"| {theirs.p99_ms:.2f} | {row.ratio:.2f}x |"
        )
    by_tag = [row for row in rows if row.case.label == "manifest GET by tag"]
    at_32 = next(row for row in by_tag if row.connections == 32)
    at_1 = next(row for row in by_tag if row.connections == 1)
    lines += [
        "",
        f"- Target: warm manifest GET at 32 connections >= {TARGET_RPS_RATIO}x docker-registry: "
        f"{at_32.ratio:.2f}x, {_verdict(at_32.ratio >= TARGET_RPS_RATIO)}.",
        f"- Target: warm manifest GET p99 at 1 connection < {TARGET_P99_MS:.0f} ms: "
        f"{at_1.nixery.p99_ms:.2f} ms, {_verdict(at_1.nixery.p99_ms < TARGET_P99_MS)}.",
        "",
    ]
    return "\n".join(lines)


def run(quick: bool) -> str:
    rows, seconds, rounds = measure(quick)
    return report(rows, seconds, rounds, quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one 1 s round per cell (CI)")
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
