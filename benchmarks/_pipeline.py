"""Shared by the pipeline and cold-image benchmarks: the benchmark package set, shell baselines,
an in-process image builder, timing and Markdown tables."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from nixery.build.builder import BuildTimings, ImageBuilder
from nixery.build.nix import Nix
from nixery.config import Config, find_nix_dir
from nixery.index.sqlite import SqliteIndex
from nixery.storage.filesystem import FilesystemStorage

REPO = Path(__file__).resolve().parent.parent
BENCH_PKGS = REPO / "benchmarks" / "pkgs"
OFFLINE_NIX_CONFIG = "substituters =\nexperimental-features = nix-command"
MB = 1e6
NIX_TIMEOUT = 1800.0
# The registry's defaults.
LAYER_BUDGET = Config.layer_budget
LAYER_WORKERS = Config.layer_workers

T = TypeVar("T")


class MissingTool(RuntimeError):
    pass


def require_tools(*tools: str) -> None:
    """A benchmark without its baseline is no benchmark: fail loudly, never skip."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise MissingTool(f"missing tools {missing}: run scripts/setup-system --test")


def nix_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("NIX_CONFIG", OFFLINE_NIX_CONFIG)
    return env


def nix_build(attributes: Sequence[str], expression: Path = BENCH_PKGS) -> list[str]:
    """Build the attributes of a package set; their output paths, in order."""
    command = ["nix-build", str(expression), "--no-out-link"]
    for attribute in attributes:
        command += ["-A", attribute]
    result = subprocess.run(command, env=nix_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    return result.stdout.split()


def closure(paths: Sequence[str]) -> list[str]:
    result = subprocess.run(
        ["nix-store", "--query", "--requisites", *paths],
        env=nix_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(result.stdout.split())


def runtime_dependencies(package: str) -> list[str]:
    return (Path(package) / "nix-support" / "runtime-dependencies").read_text().split()


@dataclass(frozen=True)
class TreeSize:
    bytes: int
    files: int


def tree_size(paths: Sequence[str]) -> TreeSize:
    """The bytes of the regular files below the paths: the data every pass has to read."""
    total = files = 0
    for path in paths:
        for directory, _, names in os.walk(path):
            for name in names:
                status = os.lstat(os.path.join(directory, name))
                if stat.S_ISREG(status.st_mode):
                    total += status.st_size
                    files += 1
    return TreeSize(total, files)


def timed(action: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


@dataclass(frozen=True)
class PipelineRun:
    seconds: float
    output_bytes: int  # what reached the last stage (sha256sum)


def run_shell_pipeline(paths: Sequence[str], *stages: str) -> PipelineRun:
    """`tar -c PATHS | STAGE ... | sha256sum`, timed, with the bytes reaching sha256sum counted by a
    `tee` into a FIFO that `wc -c` reads.

    GNU tar with --sort=name reads the paths in the same bytewise order as our layer writer.
    """
    relative = " ".join(shlex.quote(os.path.relpath(path, "/")) for path in sorted(paths))
    pipeline = " | ".join(
        [f"tar -cf - --sort=name -C / {relative}", *stages, 'tee "$D/fifo"', "sha256sum >/dev/null"]
    )
    script = (
        'set -o pipefail; mkfifo "$D/fifo"; wc -c < "$D/fifo" > "$D/count" & counter=$!; '
        f"{pipeline}; status=$?; wait $counter; exit $status"
    )
    with tempfile.TemporaryDirectory(prefix="nixery-bench-") as scratch:
        env = {**os.environ, "D": scratch}
        _, seconds = timed(
            lambda: subprocess.run(["bash", "-c", script], env=env, check=True, cwd="/")
        )
        counted = int((Path(scratch) / "count").read_text())
    return PipelineRun(seconds, counted)


def warm_page_cache(paths: Sequence[str]) -> None:
    """Read everything once, so no pass pays for the disk and the first one is not penalised."""
    run_shell_pipeline(paths)


@dataclass
class InProcessRegistry:
    """The registry's real builder on a fresh filesystem storage and SQLite index."""

    builder: ImageBuilder
    storage: FilesystemStorage
    index: SqliteIndex
    timings: list[BuildTimings]


def in_process_registry(
    root: Path, popularity: Mapping[str, int] | None = None
) -> InProcessRegistry:
    storage = FilesystemStorage(root / "storage")
    index = SqliteIndex(root / "index.sqlite")
    timings: list[BuildTimings] = []
    nix = Nix(find_nix_dir(), root / "gcroots", NIX_TIMEOUT, extra_env=_nix_config_env())
    builder = ImageBuilder(
        nix,
        storage,
        index,
        popularity=popularity or {},
        layer_budget=LAYER_BUDGET,
        layer_workers=LAYER_WORKERS,
        on_built=timings.append,
    )
    return InProcessRegistry(builder, storage, index, timings)


def _nix_config_env() -> dict[str, str]:
    return {"NIX_CONFIG": nix_env()["NIX_CONFIG"]}


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if index == 0 else "---:" for index in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"
