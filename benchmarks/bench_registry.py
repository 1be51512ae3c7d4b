"""End-to-end figures of the registry on the bundled test package set.

    NIX_CONFIG='substituters =' .venv/bin/python benchmarks/bench_registry.py [--stack]

For `nixery serve` (and with --stack, the registry function on the dev stack's emulators):
- cold: time to the first manifest of an image the registry has never built (its store paths may
  already be in the Nix store from earlier runs; the figure then is evaluation + layering +
  compression + storage);
- warm: manifest latency once built, as a ratio to `GET /v2/` on the same server in the same
  run (the cost of the request path itself);
- the layer count and compressed bytes of each image.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from nixery.devstack import free_port, spawn, start_dev_stack

REPO = Path(__file__).resolve().parent.parent
TEST_PKGS = REPO / "tests" / "pkgs"
IMAGES = ["shell/hello", "shell/app/multi/emptydir", "syntheticall"]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
WARM_REQUESTS = 200


def median_ms(session: requests.Session, url: str, count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = session.get(url, headers={"Accept": OCI_MANIFEST}, timeout=60)
        samples.append(time.perf_counter() - started)
        response.raise_for_status()
    return statistics.median(samples) * 1000


def measure(label: str, base_url: str) -> None:
    session = requests.Session()
    print(f"\n{label}")
    print(
        f"{'image':<28} {'cold s':>8} {'layers':>7} {'MB gz':>8} {'warm ms':>8} {'/v2/ ms':>8} {'ratio':>6}"
    )
    for image in IMAGES:
        url = f"{base_url}/v2/{image}/manifests/latest"
        started = time.perf_counter()
        response = session.get(url, headers={"Accept": OCI_MANIFEST}, timeout=900)
        cold = time.perf_counter() - started
        response.raise_for_status()
        layers = response.json()["layers"]
        size = sum(layer["size"] for layer in layers) / 1e6
        warm = median_ms(session, url, WARM_REQUESTS)
        base = median_ms(session, f"{base_url}/v2/", WARM_REQUESTS)
        print(
            f"{image:<28} {cold:>8.2f} {len(layers):>7} {size:>8.2f} {warm:>8.2f} {base:>8.2f} "
            f"{warm / base:>6.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", action="store_true", help="also measure the dev stack")
    args = parser.parse_args()
    os.environ.setdefault("NIX_CONFIG", "substituters =\nexperimental-features = nix-command")
    with tempfile.TemporaryDirectory(prefix="nixery-bench-") as scratch:
        port = free_port()
        env = {
            **os.environ,
            "NIXERY_PKGS_PATH": str(TEST_PKGS),
            "STORAGE_PATH": f"{scratch}/serve",
            "PORT": str(port),
        }
        server = spawn(
            "nixery serve",
            [sys.executable, "-m", "nixery", "serve"],
            port,
            Path(scratch) / "serve.log",
            env,
        )
        try:
            measure("nixery serve (filesystem + SQLite)", server.url)
        finally:
            server.stop()
        if args.stack:
            stack = start_dev_stack(Path(scratch) / "stack", {"NIXERY_PKGS_PATH": str(TEST_PKGS)})
            try:
                measure(
                    "dev stack: function -> builder, GCS + Firestore emulators", stack.registry_url
                )
            finally:
                stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
