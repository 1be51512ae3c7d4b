"""Cold start of the registry function: its imports, and a fresh instance's first requests.

    python -m benchmarks.bench_coldstart [--quick]

The dev stack (Firestore emulator, fake-gcs-server, builder) is started once and `hello` built
through it, so the manifest is warm. Then, several times, a fresh registry function process is
started as the dev stack starts it (functions-framework, `--target registry`, the stack's
settings), and timed from process start:

- to the first answered `GET /v2/` (polled every 10 ms: what a start-up probe or a client's
  first request sees),
- to the first answered warm `GET /v2/hello/manifests/latest` (sent right after: a `docker
  pull`'s second request, served from Firestore),
- the import and assembly alone (`import main` and the registry function's wiring, in a fresh
  interpreter), and the share of it that `google.cloud.firestore` takes (`-X importtime`).

Medians of the runs are reported. The machine is shared and noisy: compare with the baseline
recorded below (measured the same way before the imports were made lazy), not across machines.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nixery.cloud.devstack import (
    DevStack,
    ManagedProcess,
    free_port,
    function_main,
    start_dev_stack,
)

TITLE = "Cold start of the registry function"
REPO = Path(__file__).resolve().parent.parent
TEST_PKGS = REPO / "tests" / "pkgs"
OFFLINE_NIX_CONFIG = "substituters =\nexperimental-features = nix-command"
IMAGE = "hello"
POLL_SECONDS = 0.01
FULL_RUNS = 7
QUICK_RUNS = 2

# Measured with this suite on this machine kind at 4b9afdd, before the function's imports were
# made lazy (median of 7 runs), seconds.
BASELINE = {
    "assemble": 1.21,
    "firestore_import": 0.49,
    "first_v2": 1.74,
    "first_manifest": 1.80,
}

# `import main` and the registry function's wiring, as functions-framework does at start-up.
ASSEMBLE_PROBE = """\
import sys, time
started = time.perf_counter()
import main
from nixery.cloud.clients import cloud_config
from nixery.cloud.function import registry_api
registry_api(cloud_config())
print(time.perf_counter() - started)
print(int("google.cloud.firestore" in sys.modules))
"""


@dataclass(frozen=True)
class StartUp:
    first_v2: float
    first_manifest: float


def _answered(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def time_start_up(stack: DevStack, log: Path) -> StartUp:
    """A fresh registry function: seconds from process start to its first answers."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--target",
        "registry",
        "--source",
        str(function_main()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as output:
        started = time.monotonic()
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **stack.registry_env},
            start_new_session=True,
        )
    process = ManagedProcess("registry", popen.pid, port, str(log), popen)
    try:
        while not _answered(url + "/v2/"):
            if popen.poll() is not None or time.monotonic() - started > 60:
                raise RuntimeError(f"the function did not start:\n{process.log_tail()}")
            time.sleep(POLL_SECONDS)
        first_v2 = time.monotonic() - started
        request = urllib.request.Request(
            f"{url}/v2/{IMAGE}/manifests/latest",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
        return StartUp(first_v2, time.monotonic() - started)
    finally:
        process.stop()


def time_assembly(stack: DevStack) -> tuple[float, bool]:
    """Seconds to import main.py and wire the registry function; whether Firestore was loaded."""
    result = subprocess.run(
        [sys.executable, "-c", ASSEMBLE_PROBE],
        cwd=function_main().parent,
        env={**os.environ, **stack.registry_env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    seconds, firestore_loaded = result.stdout.split()
    return float(seconds), firestore_loaded == "1"


def firestore_import_seconds() -> float:
    """Cumulative import time of google.cloud.firestore in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import google.cloud.firestore"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for line in result.stderr.splitlines():
        fields = [field.strip() for field in line.removeprefix("import time:").split("|")]
        if len(fields) == 3 and fields[2] == "google.cloud.firestore":
            return int(fields[1]) / 1e6
    raise RuntimeError("google.cloud.firestore missing from -X importtime's output")


def run(quick: bool) -> str:
    os.environ.setdefault("NIX_CONFIG", OFFLINE_NIX_CONFIG)
    runs = QUICK_RUNS if quick else FULL_RUNS
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as scratch:
        stack = start_dev_stack(Path(scratch) / "stack", {"NIXERY_PKGS_PATH": str(TEST_PKGS)})
        try:
            warm = urllib.request.Request(
                f"{stack.registry_url}/v2/{IMAGE}/manifests/latest",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            )
            with urllib.request.urlopen(warm, timeout=300) as response:
                assert response.status == 200
            starts, assemblies, firestore = [], [], []
            loaded_at_start = False
            for index in range(runs):
                starts.append(time_start_up(stack, Path(scratch) / f"registry-{index}.log"))
                seconds, loaded_at_start = time_assembly(stack)
                assemblies.append(seconds)
                firestore.append(firestore_import_seconds())
        finally:
            stack.stop()
    measured = {
        "assemble": statistics.median(assemblies),
        "firestore_import": statistics.median(firestore),
        "first_v2": statistics.median(s.first_v2 for s in starts),
        "first_manifest": statistics.median(s.first_manifest for s in starts),
    }
    rows = [
        ("import main.py and wire the registry function", "assemble"),
        ("of which google.cloud.firestore's import, alone", "firestore_import"),
        ("process start to the first answered `GET /v2/`", "first_v2"),
        ("process start to the first warm manifest `GET`", "first_manifest"),
    ]
    lines = [
        f"## {TITLE}",
        "",
        f"A fresh registry function (`functions/main.py`, target `registry`, under "
        f"functions-framework as the dev stack runs it) against the emulators, started {runs} "
        "time(s); medians in seconds. `hello` was built beforehand, so the manifest is warm "
        "(served from Firestore). The baseline was measured the same way before the function's "
        "imports were made lazy (Firestore, GCS, signing and ID tokens on first use, pages on "
        "first page). Firestore is "
        + ("still" if loaded_at_start else "no longer")
        + " imported at start-up. Script: `benchmarks/bench_coldstart.py`.",
        "",
        "| measure | before | now |",
        "|---|---:|---:|",
    ]
    for label, key in rows:
        lines.append(f"| {label} | {BASELINE[key]:.2f} | {measured[key]:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run("--quick" in sys.argv))
