"""Layer pipeline throughput: our tar, sha256, gzip, sha256 and store pass against shell pipelines
over the same store paths, in the same run.

    python -m benchmarks.bench_pipeline [--quick]

The input is `hostfiles` of the benchmark package set (benchmarks/pkgs): real files from the
host's /usr/lib copied into store paths (8 paths, 320 MB of files; 4 paths, 8 MB in quick mode).
Every pass runs `rounds` times, interleaved, and the fastest run of each counts: the machine is
shared, and the fastest run is the one least disturbed by others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks._pipeline import (
    BENCH_PKGS,
    LAYER_WORKERS,
    MB,
    PipelineRun,
    TreeSize,
    in_process_registry,
    nix_build,
    require_tools,
    run_shell_pipeline,
    runtime_dependencies,
    table,
    timed,
    tree_size,
    verdict,
    warm_page_cache,
)
from nixery.build import gzipstream
from nixery.build.contract import image_key
from nixery.build.graph import name_version
from nixery.build.gzipstream import COMPRESSOR
from nixery.build.layering import POPULARITY_THRESHOLD
from nixery.build.layers import write_store_layer
from nixery.registry.names import parse_image_name
from nixery.registry.sources import PathSource
from nixery.storage.filesystem import FilesystemStorage

TITLE = "Layer pipeline throughput"
RSS_TARGET_MB = 256
PIGZ_TARGET = 1.0
GZIP6_TARGET = 6.0
SIZE_TARGET = 1.15

# The baselines, as the issue names them: Nixery's default, the 2-core practical limit, the floor.
GZIP6 = "tar | gzip -6 | sha256sum"
PIGZ1 = "tar | pigz -1 | sha256sum"
FLOOR = "tar | sha256sum"
BASELINE_STAGES: dict[str, tuple[str, ...]] = {
    GZIP6: ("gzip -6 -n",),
    PIGZ1: ("pigz -1 -n",),
    FLOOR: (),
}
ONE_LAYER = "ours: one layer (write_store_layer: isal level 2, 2 threads)"
# The choice of level and threads, measured the same way (the chosen setting is ONE_LAYER).
SETTINGS = {
    "one layer with isal level 1, 2 threads": (1, 2),
    "one layer with isal level 2, 1 thread": (2, 1),
    "one layer with isal level 3, 2 threads": (3, 2),
}
IMAGE = "ours: whole image (ImageBuilder)"


@dataclass(frozen=True)
class Scale:
    attribute: str  # the hostfiles variant: its `all` package depends on every part
    rounds: int
    rss_attribute: str  # the variant whose one layer measures peak RSS


FULL = Scale("hostfiles.full", rounds=3, rss_attribute="hostfiles.gigabyte")
QUICK = Scale("hostfiles.quick", rounds=1, rss_attribute="hostfiles.quick")


@dataclass(frozen=True)
class Pass:
    seconds: float
    compressed_bytes: int | None


@dataclass(frozen=True)
class PeakRss:
    input: TreeSize
    seconds: float
    max_rss_bytes: int


def run(quick: bool) -> str:
    require_tools("nix-build", "nix-store", "tar", "gzip", "pigz", "sha256sum", "bash")
    scale = QUICK if quick else FULL
    [package] = nix_build([f"{scale.attribute}.all"])
    parts = runtime_dependencies(package)
    size = tree_size(parts)
    warm_page_cache(parts)

    best: dict[str, Pass] = {}
    image_layers = 0
    for _ in range(scale.rounds):
        for name, stages in BASELINE_STAGES.items():
            outcome: PipelineRun = run_shell_pipeline(parts, *stages)
            _keep_fastest(
                best, name, Pass(outcome.seconds, outcome.output_bytes if stages else None)
            )
        _keep_fastest(best, ONE_LAYER, _one_layer(parts))
        for name, (level, threads) in SETTINGS.items():
            with _compressor_setting(level, threads):
                _keep_fastest(best, name, _one_layer(parts))
        image_pass, image_layers = _whole_image(scale)
        _keep_fastest(best, IMAGE, image_pass)
    rss = _peak_rss(scale)
    return _section(scale, size, len(parts), best, image_layers, rss, quick)


def _keep_fastest(best: dict[str, Pass], name: str, candidate: Pass) -> None:
    if name not in best or candidate.seconds < best[name].seconds:
        best[name] = candidate


@contextmanager
def _compressor_setting(level: int, threads: int) -> Iterator[None]:
    """Another level or thread count for this process's layers, for comparison only."""
    saved = gzipstream.COMPRESSION_LEVEL, gzipstream.COMPRESSION_THREADS
    gzipstream.COMPRESSION_LEVEL, gzipstream.COMPRESSION_THREADS = level, threads
    try:
        yield
    finally:
        gzipstream.COMPRESSION_LEVEL, gzipstream.COMPRESSION_THREADS = saved


def _one_layer(parts: list[str]) -> Pass:
    with tempfile.TemporaryDirectory(prefix="nixery-bench-layer-") as scratch:
        storage = FilesystemStorage(Path(scratch))
        blob, seconds = timed(lambda: write_store_layer(parts, storage))
    return Pass(seconds, blob.size)


def _whole_image(scale: Scale) -> tuple[Pass, int]:
    """The image named by the closure's package, built by the real builder on fresh storage: its
    layers, manifests and index. Popularity data as `nixery popcount` would give for paths that
    many packages use makes each part a layer of its own, written `LAYER_WORKERS` at a time."""
    request = parse_image_name(f"{scale.attribute}.all")
    revision = PathSource(BENCH_PKGS).resolve("latest")
    assert revision is not None  # a path source always has its current revision
    [package] = nix_build([f"{scale.attribute}.all"])
    popular = {name_version(part): POPULARITY_THRESHOLD for part in runtime_dependencies(package)}
    with tempfile.TemporaryDirectory(prefix="nixery-bench-image-") as scratch:
        registry = in_process_registry(Path(scratch), popular)
        record = registry.builder.build(image_key(revision, request), request, revision)
        manifest = registry.index.get_manifest(record.oci_digest)
        assert manifest is not None
        layers = json.loads(manifest.body)["layers"]
        [timings] = registry.timings
    compressed = sum(layer["size"] for layer in layers)
    return Pass(timings.ours, compressed), len(layers)


_RSS_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    from nixery.build.layers import write_store_layer
    from nixery.storage.filesystem import FilesystemStorage
    root, *paths = sys.argv[1:]
    started = time.perf_counter()
    write_store_layer(paths, FilesystemStorage(Path(root)))
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "max_rss_bytes": peak_kib * 1024}))
    """
)


def _peak_rss(scale: Scale) -> PeakRss:
    """One layer of the RSS variant in a fresh interpreter: its whole peak resident set, the
    interpreter and its imports included, is what a builder process needs for that layer."""
    [package] = nix_build([f"{scale.rss_attribute}.all"])
    parts = runtime_dependencies(package)
    warm_page_cache(parts)
    with tempfile.TemporaryDirectory(prefix="nixery-bench-rss-") as scratch:
        result = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, scratch, *parts],
            capture_output=True,
            text=True,
            check=True,
        )
    report = json.loads(result.stdout)
    return PeakRss(tree_size(parts), report["seconds"], report["max_rss_bytes"])


def _section(
    scale: Scale,
    size: TreeSize,
    path_count: int,
    best: dict[str, Pass],
    image_layers: int,
    rss: PeakRss,
    quick: bool,
) -> str:
    ours = best[ONE_LAYER]
    gzip6 = best[GZIP6]
    pigz1 = best[PIGZ1]
    assert gzip6.compressed_bytes and ours.compressed_bytes

    def rate(seconds: float) -> float:
        return size.bytes / MB / seconds

    rows = []
    for name in (ONE_LAYER, IMAGE, PIGZ1, GZIP6, FLOOR, *SETTINGS):
        measured = best[name]
        compressed = measured.compressed_bytes
        rows.append(
            [
                name,
                f"{measured.seconds:.2f}",
                f"{rate(measured.seconds):.0f}",
                f"{best[name].seconds / ours.seconds:.2f}x",
                f"{compressed / MB:.1f}" if compressed else "-",
                f"{compressed / gzip6.compressed_bytes:.3f}" if compressed else "-",
            ]
        )
    vs_pigz = pigz1.seconds / ours.seconds
    vs_gzip6 = gzip6.seconds / ours.seconds
    image_vs_pigz = pigz1.seconds / best[IMAGE].seconds
    image_vs_gzip6 = gzip6.seconds / best[IMAGE].seconds
    size_ratio = ours.compressed_bytes / gzip6.compressed_bytes
    rss_mb = rss.max_rss_bytes / MB
    rss_note = (
        f"one layer of {rss.input.bytes / MB:.0f} MB ({rss.input.files} files)"
        if quick
        else f"one 1 GB layer ({rss.input.bytes / MB:.0f} MB in {rss.input.files} files)"
    )
    targets = [
        f"- Throughput at least {PIGZ_TARGET:.1f}x `pigz -1`: {verdict(vs_pigz >= PIGZ_TARGET)}"
        f" - one layer {vs_pigz:.2f}x, whole image {image_vs_pigz:.2f}x.",
        f"- Throughput at least {GZIP6_TARGET:.0f}x `gzip -6`: {verdict(vs_gzip6 >= GZIP6_TARGET)}"
        f" - one layer {vs_gzip6:.2f}x, whole image {image_vs_gzip6:.2f}x.",
        f"- Compressed size at most {SIZE_TARGET}x `gzip -6`: {verdict(size_ratio <= SIZE_TARGET)}"
        f" - {size_ratio:.3f}x.",
        f"- Peak builder RSS under {RSS_TARGET_MB} MB for a 1 GB layer: "
        f"{verdict(rss_mb < RSS_TARGET_MB) if not quick else '(quick mode: not a 1 GB layer)'}"
        f" - {rss_mb:.0f} MB for {rss_note}, written at {rss.input.bytes / MB / rss.seconds:.0f} MB/s.",
    ]
    return "\n".join(
        [
            f"## {TITLE}",
            "",
            f"Input: `{scale.attribute}` of `benchmarks/pkgs`, {path_count} store paths holding "
            f"{size.bytes / MB:.0f} MB in {size.files} regular files copied from this host's "
            "/usr/lib (so the figures are this machine's). MB/s is those file bytes over the "
            f"time of the pass; each pass ran {scale.rounds} time(s), interleaved, and the "
            "fastest counts. Baselines are bash pipelines of GNU tar (`--sort=name`, the order "
            "our layers use), the compressor and `sha256sum`, with a `tee` to `wc -c` counting "
            "the compressed bytes. Ours writes the blob to filesystem storage and fsyncs it; "
            f"the compressor is `{COMPRESSOR}`. The whole image is the closure's package built "
            f"by the real `ImageBuilder` ({image_layers} layers, {LAYER_WORKERS} layer workers); "
            "its time is the builder's own part (layering, layers, manifests, index), Nix "
            "excluded. The last rows are the other compressor settings considered, measured "
            "the same way.",
            "",
            table(
                ["pass", "seconds", "MB/s", "its time / ours", "compressed MB", "size vs gzip -6"],
                rows,
            ),
            "",
            "Targets:",
            "",
            *targets,
            "",
        ]
    )


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    print(run(quick))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
