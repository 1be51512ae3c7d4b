"""Layer compression: isal gzip-1 (ours) against zlib -6 (Nixery's choice), and whether threads help.

Usage: python benchmarks/bench_layers.py [ABSOLUTE_PATH ...]

With no paths, a mix of binaries and text from the host (/usr/bin, /usr/include) stands in for store
paths. Everything runs in one process on the same bytes, so the numbers compare with each other;
they are not comparable across machines. The zlib -6 passes dominate: a few minutes on 2 cores.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

from isal import isal_zlib

from nixery.layers import COMPRESSOR, write_store_layer
from nixery.storage.filesystem import FilesystemStorage

DEFAULT_PATHS = ("/usr/bin", "/usr/include")
CHUNK = 1 << 20
MB = 1e6

T = TypeVar("T")


class CompressObject(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


Compressor = Callable[[], CompressObject]
COMPRESSORS: dict[str, Compressor] = {
    "isal gzip-1 (ours)": lambda: isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31),
    "isal gzip-2": lambda: isal_zlib.compressobj(2, isal_zlib.DEFLATED, 31),
    "zlib gzip-6 (Nixery)": lambda: zlib.compressobj(6, zlib.DEFLATED, 31),
    "zlib gzip-1": lambda: zlib.compressobj(1, zlib.DEFLATED, 31),
}


def timed(action: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def compress_file(tar: Path, new_compressor: Compressor) -> int:
    """Streams the file through one compressor, as a layer write does; returns compressed size."""
    compressor = new_compressor()
    size = 0
    with tar.open("rb", buffering=0) as source:
        while chunk := source.read(CHUNK):
            size += len(compressor.compress(chunk))
    return size + len(compressor.flush())


def sha256_file(tar: Path) -> None:
    digest = hashlib.sha256()
    with tar.open("rb", buffering=0) as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)


def gunzip_to(blob: Path, tar: Path) -> int:
    with gzip.open(blob) as source, tar.open("wb") as out:
        while chunk := source.read(CHUNK):
            out.write(chunk)
    return tar.stat().st_size


def run(paths: Sequence[str]) -> None:
    print(f"compressor id: {COMPRESSOR}; cores: {os.cpu_count()}; inputs: {', '.join(paths)}")
    with tempfile.TemporaryDirectory(prefix="bench-layers-") as scratch_dir:
        scratch = Path(scratch_dir)
        storage = FilesystemStorage(scratch / "storage")

        # Warm the page cache so the first measurement does not pay for the disk.
        write_store_layer(paths, storage)
        blob, seconds = timed(lambda: write_store_layer(paths, storage))
        tar = scratch / "layer.tar"
        tar_size = gunzip_to(storage.blob_path(blob.digest), tar)
        print(
            f"\nend to end write_store_layer: {tar_size / MB:.0f} MB tar in {seconds:.2f} s = "
            f"{tar_size / MB / seconds:.0f} MB/s (walk, read, 2x sha256, gzip, fsync'd write); "
            f"ratio {blob.size / tar_size:.3f}"
        )

        _, seconds = timed(lambda: sha256_file(tar))
        print(f"sha256 alone: {tar_size / MB / seconds:.0f} MB/s")

        print(f"\n{'compressor':<22} {'MB/s':>7} {'ratio':>7} {'vs zlib-6 time':>15}")
        results: dict[str, tuple[int, float]] = {}
        for name, new_compressor in COMPRESSORS.items():
            results[name] = timed(lambda factory=new_compressor: compress_file(tar, factory))
        baseline_seconds = results["zlib gzip-6 (Nixery)"][1]
        for name, (size, seconds) in results.items():
            print(
                f"{name:<22} {tar_size / MB / seconds:>7.0f} {size / tar_size:>7.3f} "
                f"{seconds / baseline_seconds:>14.2f}x"
            )

        print("\ntwo layers at once: 2 threads vs one after the other")
        for name in ("isal gzip-1 (ours)", "zlib gzip-6 (Nixery)"):
            new_compressor = COMPRESSORS[name]
            _, sequential = timed(
                lambda factory=new_compressor: [compress_file(tar, factory) for _ in range(2)]
            )
            with ThreadPoolExecutor(max_workers=2) as pool:
                _, threaded = timed(
                    lambda factory=new_compressor, pool=pool: list(
                        pool.map(lambda _: compress_file(tar, factory), range(2))
                    )
                )
            print(f"  compress only, {name:<22} speedup {sequential / threaded:.2f}x")

        _, sequential = timed(lambda: [write_store_layer(paths, storage) for _ in range(2)])
        with ThreadPoolExecutor(max_workers=2) as pool:
            _, threaded = timed(
                lambda: list(pool.map(lambda _: write_store_layer(paths, storage), range(2)))
            )
        print(f"  write_store_layer end to end          speedup {sequential / threaded:.2f}x")


def main() -> None:
    paths = sys.argv[1:] or [path for path in DEFAULT_PATHS if os.path.isdir(path)]
    if not paths:
        sys.exit("give absolute paths to tar")
    run(paths)


if __name__ == "__main__":
    main()
