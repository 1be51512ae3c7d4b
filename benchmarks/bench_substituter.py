"""Layers from the binary cache: a cold image on a cold store, realising versus streaming NARs,
with 0 %, 50 % and 90 % of its layers already stored.

    python -m benchmarks.bench_substituter [--quick]

One run, one cache: `benchmarks/pkgs/substituter.nix` (store paths of the host's real files, under
a fresh salt) is built, copied into a signed xz `file://` cache with NAR listings (as
cache.nixos.org serves them) and deleted from the store; the cache is served over HTTP on
127.0.0.1. Each build runs in a process of its own (for its peak RSS) with the real
`ImageBuilder` on a copy of storage that holds the chosen fraction of the image's store layers:

- realise: Nix substitutes the closure from the cache into /nix/store, then the layers are tarred;
- stream: Nix only evaluates; closure from narinfos, layers straight from the NARs.

Bytes fetched are counted by the cache server; the store is emptied of the closure before each
build. Both paths must give the same image digest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks._pipeline import MB, require_tools, table, verdict
from nixery.build.builder import ImageBuilder
from nixery.build.contract import AMD64, ImageRequest, image_key
from nixery.build.nix import Nix
from nixery.build.substituter import Substituter
from nixery.config import find_nix_dir
from nixery.index.sqlite import SqliteIndex
from nixery.registry.sources import PathSource
from nixery.storage.filesystem import FilesystemStorage
from tests.substituter.binary_cache import (
    OFFLINE_NIX_CONFIG,
    CacheServer,
    delete_from_store,
    fill_cache,
    generate_key,
    nix_env,
)

TITLE = "Layers from the binary cache"
PACKAGE_SET = Path(__file__).resolve().parent / "pkgs" / "substituter.nix"
FRACTIONS = (0.0, 0.5, 0.9)
MODES = ("realise", "stream")
NIX_TIMEOUT = 1800


@dataclass(frozen=True)
class Scale:
    parts: int
    megabytes: int  # per part


FULL = Scale(parts=10, megabytes=30)
QUICK = Scale(parts=4, megabytes=2)


@dataclass(frozen=True)
class Measured:
    mode: str
    fraction: float
    stored_layers: int
    seconds: float
    fetched: int  # bytes served by the cache
    rss_builder_kb: int
    rss_tree_kb: int  # the builder plus its Nix processes at once (sampled)
    manifest: str


def run(quick: bool) -> str:
    require_tools("nix-build", "nix-store", "nix")
    scale = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench-substituter-") as scratch_name:
        scratch = Path(scratch_name)
        package_set = scratch / "pkgs"
        package_set.mkdir()
        salt = f"bench-{time.time_ns()}"
        (package_set / "default.nix").write_text(
            f"{{ ... }}@args: import {PACKAGE_SET} (args // {{ salt = {json.dumps(salt)}; "
            f"parts = {scale.parts}; megabytes = {scale.megabytes}; }})\n"
        )
        closure = subprocess.run(
            ["nix-build", "--no-out-link", str(package_set)],
            check=True,
            capture_output=True,
            text=True,
            env=nix_env(),
        ).stdout.split()
        try:
            return _measure_all(scratch, package_set, sorted(closure), scale)
        finally:
            shutil.rmtree(scratch / "gcroots", ignore_errors=True)
            for root in scratch.glob("*/gcroots"):
                shutil.rmtree(root, ignore_errors=True)
            delete_from_store(closure)


def _measure_all(scratch: Path, package_set: Path, closure: list[str], scale: Scale) -> str:
    nar_size = sum(_nar_size(path) for path in closure)
    key = generate_key(scratch / "keys", "bench-cache-1")
    cache_dir = fill_cache(scratch / "cache", key, closure, "xz", listings=True)
    cache_bytes = sum(path.stat().st_size for path in cache_dir.rglob("*") if path.is_file())
    packages = [f"part{index}" for index in range(scale.parts)]
    results: list[Measured] = []
    with CacheServer(cache_dir) as cache:
        # Every layer of the image, made once (streaming: the store is not involved).
        template = scratch / "template"
        manifest = _build_in_process(template, package_set, packages, cache.url, key.public)
        store_layers = _store_layer_digests(template, manifest)
        delete_from_store(closure)
        for fraction in FRACTIONS:
            keep = store_layers[: round(fraction * len(store_layers))]
            for mode in MODES:
                root = scratch / f"{mode}-{int(fraction * 100)}"
                _storage_holding(template, root, set(keep))
                before = cache.bytes_served
                outcome = _build_in_subprocess(
                    root, package_set, packages, mode, cache.url, key.public
                )
                results.append(
                    Measured(
                        mode=mode,
                        fraction=fraction,
                        stored_layers=len(keep),
                        seconds=float(str(outcome["seconds"])),
                        fetched=cache.bytes_served - before,
                        rss_builder_kb=int(str(outcome["rss_self_kb"])),
                        rss_tree_kb=int(str(outcome["rss_tree_kb"])),
                        manifest=str(outcome["manifest"]),
                    )
                )
                shutil.rmtree(root / "gcroots", ignore_errors=True)
                delete_from_store(closure)
        # Peak RSS against closure size: half the image, streamed from nothing stored.
        half = packages[: len(packages) // 2]
        outcome = _build_in_subprocess(
            scratch / "stream-half", package_set, half, "stream", cache.url, key.public
        )
        half_rss_kb = int(outcome["rss_self_kb"])  # type: ignore[call-overload]
    if len({result.manifest for result in results}) != 1:
        raise AssertionError(f"the paths built different images: {results}")
    return _section(results, len(closure), nar_size, cache_bytes, len(store_layers), half_rss_kb)


def _nar_size(path: str) -> int:
    output = subprocess.run(
        ["nix-store", "--query", "--size", path],
        check=True,
        capture_output=True,
        text=True,
        env=nix_env(),
    ).stdout
    return int(output)


def _registry(root: Path, mode: str, cache_url: str, public_key: str) -> ImageBuilder:
    if mode == "realise":
        nix_config = (
            f"substituters = {cache_url}\ntrusted-public-keys = {public_key}\n"
            "experimental-features = nix-command"
        )
        substituter = None
    else:
        nix_config = OFFLINE_NIX_CONFIG
        substituter = Substituter([cache_url], [public_key])
    nix = Nix(find_nix_dir(), root / "gcroots", NIX_TIMEOUT, extra_env={"NIX_CONFIG": nix_config})
    return ImageBuilder(
        nix,
        FilesystemStorage(root / "storage"),
        SqliteIndex(root / "index.sqlite"),
        {},
        layer_budget=94,
        substituter=substituter,
    )


def _build_in_process(
    root: Path, package_set: Path, packages: list[str], cache_url: str, public_key: str
) -> str:
    builder = _registry(root, "stream", cache_url, public_key)
    request = ImageRequest(repository="substituted", packages=tuple(packages), platform=AMD64)
    revision = PathSource(package_set).resolve("latest")
    assert revision is not None
    return builder.build(image_key(revision, request), request, revision).oci_digest


def _store_layer_digests(root: Path, manifest_digest: str) -> list[str]:
    """The image's store layers (the symlink layer, last, is the image's own: never kept)."""
    manifest = SqliteIndex(root / "index.sqlite").get_manifest(manifest_digest)
    assert manifest is not None
    layers = [layer["digest"] for layer in json.loads(manifest.body)["layers"]]
    return layers[:-1]


def _storage_holding(template: Path, root: Path, keep: set[str]) -> None:
    """A copy of the template's storage and index holding only the `keep` layer blobs."""
    shutil.copytree(template / "storage", root / "storage")
    for index_file in template.glob("index.sqlite*"):  # with its write-ahead log
        shutil.copy(index_file, root / index_file.name)
    for blob in (root / "storage" / "blobs" / "sha256").iterdir():
        if f"sha256:{blob.name}" not in keep:
            blob.unlink()


def _build_in_subprocess(
    root: Path, package_set: Path, packages: list[str], mode: str, cache_url: str, key: str
) -> dict[str, object]:
    arguments = json.dumps([str(root), str(package_set), packages, mode, cache_url, key])
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_substituter", "--one", arguments],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def _rss_kb(pid: int | str, field: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass  # the process has exited
    return 0


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


class _TreeRss:
    """The largest sum of RSS over this process and its descendants (Nix), sampled.

    getrusage cannot tell: a child's ru_maxrss starts at its parent's RSS when it forks (Linux
    keeps the high-water mark across exec)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.peak_kb = 0
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        me = os.getpid()
        while not self._done.is_set():
            total = _rss_kb(me) + sum(_rss_kb(pid) for pid in _descendants(me))
            self.peak_kb = max(self.peak_kb, total)
            self._done.wait(self._interval)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak_kb


def _one(arguments: str) -> None:
    """One build, in this process: its wall time, its own peak RSS (the kernel's high-water
    mark, exact) and the peak of it plus its Nix processes (sampled)."""
    root, package_set, packages, mode, cache_url, key = json.loads(arguments)
    builder = _registry(Path(root), mode, cache_url, key)
    request = ImageRequest(repository="substituted", packages=tuple(packages), platform=AMD64)
    revision = PathSource(Path(package_set)).resolve("latest")
    assert revision is not None
    tree = _TreeRss()
    started = time.perf_counter()
    record = builder.build(image_key(revision, request), request, revision)
    seconds = time.perf_counter() - started
    tree_kb = tree.stop()
    stats = builder.substituter.stats if builder.substituter else None
    print(
        json.dumps(
            {
                "seconds": seconds,
                "manifest": record.oci_digest,
                "rss_self_kb": _rss_kb("self", "VmHWM"),
                "rss_tree_kb": tree_kb,
                "nars": stats.nars if stats else None,
                "listing_nars": stats.listing_nars if stats else None,
            }
        )
    )


def _section(
    results: list[Measured],
    paths: int,
    nar_size: int,
    cache_bytes: int,
    store_layers: int,
    half_rss_kb: int,
) -> str:
    by_key = {(result.mode, result.fraction): result for result in results}
    rows = []
    for result in results:
        realised = by_key[("realise", result.fraction)]
        rows.append(
            [
                f"{int(result.fraction * 100)} % ({result.stored_layers}/{store_layers})",
                result.mode,
                f"{result.fetched / MB:.1f}",
                f"{result.fetched / realised.fetched:.2f}" if realised.fetched else "-",
                f"{result.seconds:.2f}",
                f"{result.seconds / realised.seconds:.2f}",
                f"{result.rss_builder_kb / 1024:.0f}",
                f"{result.rss_tree_kb / 1024:.0f}",
                f"{nar_size / MB:.1f}" if result.mode == "realise" else "0",
            ]
        )
    at_90 = by_key[("stream", 0.9)]
    realise_90 = by_key[("realise", 0.9)]
    at_0 = by_key[("stream", 0.0)]
    realise_0 = by_key[("realise", 0.0)]
    bytes_90 = at_90.fetched / realise_90.fetched
    time_90 = at_90.seconds / realise_90.seconds
    time_0 = at_0.seconds / realise_0.seconds
    full_rss = by_key[("stream", 0.0)].rss_builder_kb / 1024
    half_rss = half_rss_kb / 1024
    return "\n".join(
        [
            f"## {TITLE}",
            "",
            f"A cold image of {paths} store paths (NAR size {nar_size / MB:.1f} MB; "
            f"{cache_bytes / MB:.1f} MB in the xz cache with listings) on a cold store, its "
            f"{store_layers} store layers partly stored already, built by the real "
            "`ImageBuilder` in a process of its own. *realise*: Nix substitutes the whole closure "
            "from the cache into /nix/store and the layers are tarred from there (today's path); "
            "*stream*: narinfos give the closure and each missing layer is made from its NARs as "
            "they download, nothing written to the store. Fetched: bytes the cache served (narinfos, "
            "listings, NARs). Peak RSS of the builder process and of the largest Nix process; "
            "store written is what realising puts in /nix/store (memory, on Cloud Run). Both paths "
            "gave the same image digest.",
            "",
            table(
                [
                    "layers stored",
                    "path",
                    "fetched MB",
                    "x realise",
                    "wall s",
                    "x realise",
                    "peak RSS builder MB",
                    "peak RSS builder + Nix MB",
                    "store written MB",
                ],
                rows,
            ),
            "",
            "Targets:",
            "",
            f"- 90 % stored, bytes at most 0.2x realising: {verdict(bytes_90 <= 0.2)} "
            f"({bytes_90:.2f}x).",
            f"- 90 % stored, wall time at most 0.5x realising: {verdict(time_90 <= 0.5)} "
            f"({time_90:.2f}x).",
            f"- 0 % stored, no slower than realising: {verdict(time_0 <= 1.0)} ({time_0:.2f}x).",
            "- Peak RSS independent of the closure (within 10 %): "
            f"{verdict(full_rss <= 1.1 * half_rss)}: the streaming builder's peak is "
            f"{full_rss:.0f} MB for the whole closure, {half_rss:.0f} MB for an image of half "
            "of it (nothing stored). Bodies stream in 1 MiB pieces; only the compressed NARs of "
            "the layers being written are spooled (in memory up to 1 MiB each, then in temporary "
            "files).",
            "",
        ]
    )


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        _one(sys.argv[2])
        return
    print(run("--quick" in sys.argv[1:]))


if __name__ == "__main__":
    main()
