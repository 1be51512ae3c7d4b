"""Shared by the serving benchmarks: the two registries, and wrk as the load tool."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nixery.cloud.devstack import ManagedProcess, free_port, spawn
from nixery.oci import OCI_MANIFEST

REPO = Path(__file__).resolve().parent.parent
TEST_PKGS = REPO / "tests" / "pkgs"
OFFLINE_NIX_CONFIG = "substituters =\nexperimental-features = nix-command"


@dataclass(frozen=True)
class ManifestLayer:
    digest: str
    size: int  # compressed bytes


def manifest_layers(host_port: str, image: str) -> list[ManifestLayer]:
    """The layers of the image's manifest; fetching it makes `nixery serve` build the image."""
    raw = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{host_port}/{image}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    ).stdout
    return [ManifestLayer(layer["digest"], layer["size"]) for layer in json.loads(raw)["layers"]]


# An access log line of `nixery serve` for a blob it sent.
BLOB_GET = re.compile(r"GET /v2/\S+/blobs/(sha256:[0-9a-f]{64}) 200")


def blobs_served(access_log: Path, offset: int = 0) -> list[str]:
    """Digests of the blobs `nixery serve` answered 200 to a GET, in order, after `offset`
    bytes of its log."""
    with access_log.open("rb") as log:
        log.seek(offset)
        return BLOB_GET.findall(log.read().decode(errors="replace"))


class MissingTool(RuntimeError):
    pass


def require_tool(name: str, package: str) -> str:
    """A suite that lacks its tool fails loudly: a benchmark silently skipped reports nothing."""
    found = shutil.which(name)
    if found is None:
        raise MissingTool(
            f"{name} is not installed (apt-get install {package}; scripts/setup-system --test)"
        )
    return found


def start_nixery(scratch: Path, extra_env: dict[str, str] | None = None) -> ManagedProcess:
    os.environ.setdefault("NIX_CONFIG", OFFLINE_NIX_CONFIG)
    port = free_port()
    env = {
        **os.environ,
        "NIXERY_PKGS_PATH": str(TEST_PKGS),
        "STORAGE_PATH": str(scratch / "nixery"),
        "PORT": str(port),
        **(extra_env or {}),
    }
    return spawn(
        "nixery serve",
        [sys.executable, "-m", "nixery", "serve", "--host", "127.0.0.1"],
        port,
        scratch / "nixery.log",
        env,
    )


def start_distribution(scratch: Path) -> ManagedProcess:
    """Debian's docker-registry (CNCF distribution 2.8), filesystem storage, on loopback."""
    binary = require_tool("docker-registry", "docker-registry")
    port = free_port()
    config = scratch / "distribution.yml"
    # As shipped, like `nixery serve`: both write an access log line per request.
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
    return spawn(
        "docker-registry", [binary, "serve", str(config)], port, scratch / "distribution.log"
    )


def copy_image(source: ManagedProcess, destination: ManagedProcess, image: str) -> None:
    """Push nixery's image into the other registry unchanged, so both serve identical bytes."""
    require_tool("skopeo", "skopeo")
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--preserve-digests",
            f"docker://{source.host_port}/{image}:latest",
            f"docker://{destination.host_port}/{image}:latest",
        ],
        check=True,
        timeout=600,
    )


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int  # non-2xx answers, socket errors and timeouts
    seconds: float
    p50_ms: float
    p99_ms: float
    bytes_read: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


# wrk's summary as one JSON line: counts, and latency percentiles in microseconds.
_WRK_SCRIPT = """
wrk.method = os.getenv("WRK_METHOD")
wrk.headers["Accept"] = os.getenv("WRK_ACCEPT")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK_JSON {"requests":%d,"errors":%d,"us":%d,"p50":%d,"p99":%d,"bytes":%d}\\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99), summary.bytes))
end
"""


def run_wrk(
    url: str,
    method: str,
    connections: int,
    seconds: float,
    scratch: Path,
    accept: str = OCI_MANIFEST,
) -> LoadResult:
    """Keep-alive load from wrk: `connections` connections for `seconds`, on one or two threads."""
    wrk = require_tool("wrk", "wrk")
    script = scratch / "wrk-summary.lua"
    script.write_text(_WRK_SCRIPT)
    threads = max(1, min(2, connections))
    result = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        env={**os.environ, "WRK_METHOD": method, "WRK_ACCEPT": accept},
        check=True,
    )
    line = next((line for line in result.stdout.splitlines() if line.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{result.stdout}\n{result.stderr}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    return LoadResult(
        requests=data["requests"],
        errors=data["errors"],
        seconds=data["us"] / 1e6,
        p50_ms=data["p50"] / 1000,
        p99_ms=data["p99"] / 1000,
        bytes_read=data["bytes"],
    )


def run_ab_head(url: str, connections: int, seconds: float, scratch: Path) -> LoadResult:
    """HEAD load from ApacheBench (`ab -i -k`): wrk's parser waits for a body after a HEAD."""
    ab = require_tool("ab", "apache2-utils")
    csv = scratch / "ab-percentiles.csv"
    result = subprocess.run(
        [
            ab,
            "-q",
            "-i",
            "-k",
            "-c",
            str(connections),
            "-t",
            str(max(1, round(seconds))),
            "-n",
            "100000000",  # after -t: otherwise -t stops at ab's default of 50000 requests
            "-s",
            "10",
            "-H",
            f"Accept: {OCI_MANIFEST}",
            "-e",
            str(csv),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    fields: dict[str, str] = {}
    for line in result.stdout.splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    percentiles = dict(
        (int(row.split(",")[0]), float(row.split(",")[1]))
        for row in csv.read_text().splitlines()[1:]
    )
    return LoadResult(
        requests=int(fields["Complete requests"]),
        errors=int(fields["Failed requests"]) + int(fields.get("Non-2xx responses", "0")),
        seconds=float(fields["Time taken for tests"].split()[0]),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        bytes_read=int(fields["Total transferred"].split()[0]),
    )
