"""nixery serve against the reference registry (CNCF distribution), serving the same images.

    apt-get install docker-registry
    NIX_CONFIG='substituters =' .venv/bin/python benchmarks/bench_vs_distribution.py

Both registries run on 127.0.0.1 in this process's run; the images are built by nixery and then
copied into distribution with skopeo, so both serve identical manifests and blobs. Reported:
median latency of a warm manifest GET and of a blob HEAD, and the throughput of GETting the
largest layer, each as a ratio nixery / distribution.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from nixery.devstack import ManagedProcess, free_port, spawn

REPO = Path(__file__).resolve().parent.parent
IMAGES = ["shell/hello", "syntheticall"]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SAMPLES = 300
BLOB_ROUNDS = 5


def start_nixery(scratch: Path) -> ManagedProcess:
    port = free_port()
    env = {
        **os.environ,
        "NIXERY_PKGS_PATH": str(REPO / "tests" / "pkgs"),
        "STORAGE_PATH": str(scratch / "nixery"),
        "PORT": str(port),
    }
    return spawn(
        "nixery", [sys.executable, "-m", "nixery", "serve"], port, scratch / "nixery.log", env
    )


def start_distribution(scratch: Path) -> ManagedProcess:
    binary = shutil.which("docker-registry")
    if binary is None:
        sys.exit("docker-registry is not installed (apt-get install docker-registry)")
    port = free_port()
    config = scratch / "distribution.yml"
    config.write_text(
        f"""version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {scratch / "distribution"}
http:
  addr: 127.0.0.1:{port}
"""
    )
    return spawn("distribution", [binary, "serve", str(config)], port, scratch / "distribution.log")


def median_ms(session: requests.Session, method: str, url: str) -> float:
    samples = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        session.request(
            method, url, headers={"Accept": OCI_MANIFEST}, timeout=60
        ).raise_for_status()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def blob_mb_per_s(session: requests.Session, url: str) -> float:
    rates = []
    for _ in range(BLOB_ROUNDS):
        started = time.perf_counter()
        with session.get(url, stream=True, timeout=60) as response:
            response.raise_for_status()
            size = sum(len(chunk) for chunk in response.iter_content(1 << 20))
        rates.append(size / (time.perf_counter() - started) / 1e6)
    return statistics.median(rates)


def main() -> int:
    os.environ.setdefault("NIX_CONFIG", "substituters =\nexperimental-features = nix-command")
    with tempfile.TemporaryDirectory(prefix="nixery-vs-distribution-") as name:
        scratch = Path(name)
        nixery, distribution = start_nixery(scratch), start_distribution(scratch)
        try:
            session = requests.Session()
            print(f"{'image':<14} {'measure':<22} {'nixery':>10} {'distribution':>13} {'ratio':>6}")
            for image in IMAGES:
                manifest = session.get(
                    f"{nixery.url}/v2/{image}/manifests/latest",
                    headers={"Accept": OCI_MANIFEST},
                    timeout=600,
                )
                manifest.raise_for_status()
                subprocess.run(
                    [
                        "skopeo",
                        "copy",
                        "--quiet",
                        "--src-tls-verify=false",
                        "--dest-tls-verify=false",
                        "--preserve-digests",
                        f"docker://{nixery.host_port}/{image}",
                        f"docker://{distribution.host_port}/{image}:latest",
                    ],
                    check=True,
                )
                largest = max(manifest.json()["layers"], key=lambda layer: layer["size"])
                rows = [
                    ("manifest GET ms", "GET", f"/v2/{image}/manifests/latest", median_ms),
                    ("blob HEAD ms", "HEAD", f"/v2/{image}/blobs/{largest['digest']}", median_ms),
                ]
                for label, method, path, measure in rows:
                    ours = measure(session, method, nixery.url + path)
                    theirs = measure(session, method, distribution.url + path)
                    print(
                        f"{image:<14} {label:<22} {ours:>10.2f} {theirs:>13.2f} {ours / theirs:>6.2f}"
                    )
                path = f"/v2/{image}/blobs/{largest['digest']}"
                ours = blob_mb_per_s(session, nixery.url + path)
                theirs = blob_mb_per_s(session, distribution.url + path)
                label = f"blob GET MB/s ({largest['size'] / 1e6:.1f} MB)"
                print(
                    f"{image:<14} {label:<22} {ours:>10.1f} {theirs:>13.1f} {ours / theirs:>6.2f}"
                )
        finally:
            nixery.stop()
            distribution.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
