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

The same is measured, interleaved run by run, for the baseline: `functions/` as it was before
the function's clients were made lazy (BASELINE_REVISION, taken from git), so that both columns
see the same load on a shared, noisy machine. Medians of the runs are reported.
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

# The last revision whose registry function made its Google clients at start-up.
BASELINE_REVISION = "4b9afdd"

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


def extract_baseline(directory: Path) -> Path:
    """`functions/` at BASELINE_REVISION, in `directory`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", BASELINE_REVISION, "functions"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True, timeout=60)
    return directory / "functions"


def time_start_up(stack: DevStack, log: Path, functions: Path) -> StartUp:
    """A fresh registry function from `functions/main.py`: seconds from process start to its
    first answers."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--target",
        "registry",
        "--source",
        str(functions / "main.py"),
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
            # The nixery package beside that main.py, not the installed one.
            env={**os.environ, **stack.registry_env, "PYTHONPATH": str(functions)},
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


def time_assembly(stack: DevStack, functions: Path) -> tuple[float, bool]:
    """Seconds to import main.py and wire the registry function; whether Firestore was loaded."""
    result = subprocess.run(
        [sys.executable, "-c", ASSEMBLE_PROBE],
        cwd=functions,
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


def medians(starts: list[StartUp], assemblies: list[float]) -> dict[str, float]:
    return {
        "assemble": statistics.median(assemblies),
        "first_v2": statistics.median(s.first_v2 for s in starts),
        "first_manifest": statistics.median(s.first_manifest for s in starts),
    }


def run(quick: bool) -> str:
    os.environ.setdefault("NIX_CONFIG", OFFLINE_NIX_CONFIG)
    runs = QUICK_RUNS if quick else FULL_RUNS
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as scratch:
        sources = {
            "before": extract_baseline(Path(scratch)),
            "now": function_main().parent,
        }
        stack = start_dev_stack(Path(scratch) / "stack", {"NIXERY_PKGS_PATH": str(TEST_PKGS)})
        try:
            warm = urllib.request.Request(
                f"{stack.registry_url}/v2/{IMAGE}/manifests/latest",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
            )
            with urllib.request.urlopen(warm, timeout=300) as response:
                assert response.status == 200
            starts: dict[str, list[StartUp]] = {name: [] for name in sources}
            assemblies: dict[str, list[float]] = {name: [] for name in sources}
            loaded: dict[str, bool] = {}
            firestore = []
            for index in range(runs):
                for name, functions in sources.items():
                    log = Path(scratch) / f"registry-{name}-{index}.log"
                    starts[name].append(time_start_up(stack, log, functions))
                    seconds, loaded[name] = time_assembly(stack, functions)
                    assemblies[name].append(seconds)
                firestore.append(firestore_import_seconds())
        finally:
            stack.stop()
    measured = {name: medians(starts[name], assemblies[name]) for name in sources}
    rows = [
        ("import main.py and wire the registry function", "assemble"),
        ("process start to the first answered `GET /v2/`", "first_v2"),
        ("process start to the first warm manifest `GET`", "first_manifest"),
    ]
    lines = [
        f"## {TITLE}",
        "",
        "A fresh registry function (`functions/main.py`, target `registry`, under "
        f"functions-framework as the dev stack runs it) against the emulators, started {runs} "
        "time(s) for each column, interleaved; medians in seconds. `hello` was built "
        "beforehand, so the manifest is warm (two Firestore reads). *Before* is `functions/` "
        f"at {BASELINE_REVISION}, which made every Google client at start-up; *now* makes them "
        "on first use (Firestore on the first manifest, GCS and signing on the first blob, ID "
        "tokens on the first build). Firestore loaded at start-up: before "
        f"{'yes' if loaded['before'] else 'no'}, now {'yes' if loaded['now'] else 'no'}; "
        "`google.cloud.firestore`'s import alone takes "
        f"{statistics.median(firestore):.2f} s (`-X importtime`), paid by the first manifest "
        "request now. Script: `benchmarks/bench_coldstart.py`.",
        "",
        "| measure | before | now | now / before |",
        "|---|---:|---:|---:|",
    ]
    for label, key in rows:
        before, now = measured["before"][key], measured["now"][key]
        lines.append(f"| {label} | {before:.2f} | {now:.2f} | {now / before:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run("--quick" in sys.argv))
