"""One image build, top-down: Nix -> closure graph -> layers -> blobs -> manifests -> index."""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from nixery.build.contract import (
    BuildReport,
    ImageRequest,
    NixTooOld,
    PackagesRefused,
    Revision,
)
from nixery.build.graph import ClosureGraph
from nixery.build.gzipstream import COMPRESSOR
from nixery.build.imageroot import ImageRoot, image_root
from nixery.build.layering import DEFAULT_LAYERING, PLANNERS, Layer
from nixery.build.layers import LayerBlob, write_image_root_layer, write_store_layer
from nixery.build.manifest import (
    Descriptor,
    HistoryEntry,
    ImageConfig,
    ImageManifest,
)
from nixery.build.nix import ImageInputs, Nix, SourceInfo, describe_source
from nixery.build.substituter import Substituter, SubstitutionUnavailable
from nixery.config import Config, Layering
from nixery.index import BlobRecord, ImageRecord, Index, LayerRecord, LayerSummary
from nixery.oci import OCI_CONFIG, OCI_LAYER, sha256_digest
from nixery.storage import Storage, put_bytes
from nixery.util.lru import Lru
from nixery.util.singleflight import SingleFlight

log = logging.getLogger(__name__)

SYMLINK_LAYER_FORMAT = 1
CHECKED_SOURCES_MEMORY = 256


def _layer_key(kind: str, paths: Sequence[str]) -> str:
    material = "\n".join([kind, COMPRESSOR, *paths])
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass(frozen=True)
class BuildTimings:
    """Where one image build spent its time, in seconds: Nix, then everything that is ours."""

    repository: str
    layer_count: int
    nix: float  # evaluate, realise and read the closure
    layering: float  # group the closure into layers
    layers: float  # write (or find cached) every layer, the symlink layer included
    publish: float  # config, both manifests and the index records

    @property
    def ours(self) -> float:
        return self.layering + self.layers + self.publish


def log_timings(timings: BuildTimings) -> None:
    log.info(
        "built %s (%d layers) in %.2fs (nix %.2fs, layering %.2fs, layers %.2fs, publish %.2fs)",
        timings.repository,
        timings.layer_count,
        timings.nix + timings.ours,
        timings.nix,
        timings.layering,
        timings.layers,
        timings.publish,
    )


@dataclass(frozen=True)
class BuiltLayer:
    blob: LayerBlob
    history: HistoryEntry


class ImageBuilder:
    def __init__(
        self,
        nix: Nix,
        storage: Storage,
        index: Index,
        popularity: Mapping[str, int],
        layer_budget: int,
        layer_workers: int = Config.layer_workers,
        max_parallel_builds: int = Config.build_concurrency,
        layering: Layering = DEFAULT_LAYERING,
        on_built: Callable[[BuildTimings], None] = log_timings,
        substituter: Substituter | None = None,
    ) -> None:
        self.nix = nix
        self.storage = storage
        self.index = index
        self.popularity = popularity
        self.layer_budget = layer_budget
        self.plan_layers = PLANNERS[layering]
        self._layer_pool = ThreadPoolExecutor(layer_workers, thread_name_prefix="layer")
        self._layer_flights: SingleFlight[LayerBlob] = SingleFlight()
        # Builds of different images share the machine: past this many, they queue.
        self._build_slots = threading.BoundedSemaphore(max_parallel_builds)
        self._on_built = on_built
        # Per source revision: the Nix it demands, checked once (a revision never changes, nor
        # does the Nix of a running builder). One check at a time per revision.
        self._source_checks: SingleFlight[SourceInfo] = SingleFlight()
        self._checked_sources: Lru[tuple[str, str], SourceInfo] = Lru(CHECKED_SOURCES_MEMORY)
        # Layers straight from binary caches when they hold the whole closure; else Nix realises.
        self.substituter = substituter

    def build(
        self,
        key: str,
        request: ImageRequest,
        revision: Revision,
        report: BuildReport | None = None,
    ) -> ImageRecord:
        with self._build_slots:
            return self._build(key, request, revision, report or BuildReport())

    def check_source(self, revision: Revision) -> SourceInfo:
        """Fetches the revision and checks that this Nix can evaluate it (its lib/minver.nix),
        once per revision; raises NixTooOld (every time, from memory) when it cannot."""
        revision_key = (revision.source_id, revision.commit)
        info = self._checked_sources.get(revision_key)
        if info is None:
            info = self._source_checks.run(
                "\0".join(revision_key), lambda: self.nix.source_info(revision.nix_source)
            )
            self._checked_sources.put(revision_key, info)
        if not info.satisfied:
            source = describe_source(revision.nix_source)
            raise NixTooOld(source, info.min_version or "?", info.nix_version)
        return info

    def _build(
        self, key: str, request: ImageRequest, revision: Revision, report: BuildReport
    ) -> ImageRecord:
        started = time.perf_counter()
        self.check_source(revision)
        inputs = self.nix.build_image_inputs(
            revision.nix_source,
            request.packages,
            request.platform.system,
            request.policy,
            report.phase,
            closure_from=self._substitutable_closure if self.substituter else None,
        )
        if inputs.graph is None:
            raise PackagesRefused(inputs.resolution.refusals)
        graph = inputs.graph
        roots = graph.roots
        nix_done = time.perf_counter()

        plan = self.plan_layers(graph, self.popularity, self.layer_budget)
        planned = time.perf_counter()
        if inputs.realised:
            built, root = self._realised_layers(plan, roots)
        else:
            built, root = self._substituted_layers(plan, graph, inputs)
        layered = time.perf_counter()

        record = self._publish(key, request, root, built)
        timings = BuildTimings(
            repository=request.repository,
            layer_count=len(built),
            nix=nix_done - started,
            layering=planned - nix_done,
            layers=layered - planned,
            publish=time.perf_counter() - layered,
        )
        report.phase("layering", timings.layering)
        report.phase("layers", timings.layers)
        report.phase("publish", timings.publish)
        report.layers.extend(
            LayerSummary(layer.blob.digest, layer.blob.size, paths)
            for layer, paths in zip(built, [*(layer.paths for layer in plan), roots], strict=True)
        )
        self._on_built(timings)
        return record

    def _realised_layers(
        self, plan: Sequence[Layer], roots: Sequence[str]
    ) -> tuple[list[BuiltLayer], ImageRoot]:
        jobs = [
            self._layer_pool.submit(self._store_layer, layer.paths, write_store_layer)
            for layer in plan
        ]
        # The image root (one walk of the top-level paths) is needed by the symlink layer and the
        # config; both are made meanwhile on this thread, beside the pool's workers.
        try:
            root = image_root(roots)
            symlinks = self._symlink_layer(roots, root)
        finally:
            # Every job ends before any failure is raised: a writer still running after the
            # request was answered would leave its temp file behind the answer.
            concurrent.futures.wait(jobs)
        return [*(job.result() for job in jobs), symlinks], root

    def _substitutable_closure(self, roots: Sequence[str]) -> ClosureGraph | None:
        assert self.substituter is not None
        try:
            return self.substituter.closure(roots)
        except SubstitutionUnavailable as error:
            log.info("not substituting (%s): realising with Nix", error)
            return None

    def _substituted_layers(
        self, plan: Sequence[Layer], graph: ClosureGraph, inputs: ImageInputs
    ) -> tuple[list[BuiltLayer], ImageRoot]:
        """Layers from the caches' NARs; on any failure, Nix realises and the layers not yet
        written are written from the store (those written stay: their bytes are the same)."""
        substituter = self.substituter
        assert substituter is not None
        roots = frozenset(graph.roots)

        def write(paths: Sequence[str], storage: Storage) -> LayerBlob:
            return substituter.write_layer(paths, storage, keep_listings=roots)

        jobs = [self._layer_pool.submit(self._store_layer, layer.paths, write) for layer in plan]
        try:
            layers = [job.result() for job in jobs]
            # After the layers: their NAR listings are what the image root reads.
            root = substituter.image_root(graph)
        except SubstitutionUnavailable as error:
            log.warning("substituting failed (%s): realising with Nix", error)
            concurrent.futures.wait(jobs)
            self.nix.realise(inputs.resolution.packages, time.monotonic() + self.nix.timeout)
            return self._realised_layers(plan, graph.roots)
        return [*layers, self._symlink_layer(graph.roots, root)], root

    def _cached_layer(
        self, key: str, history: HistoryEntry, create: Callable[[], LayerBlob]
    ) -> BuiltLayer:
        def create_once() -> LayerBlob:
            record = self.index.get_layer(key)
            # Stamped as used before it is reused, so garbage collection's grace period covers
            # this build; a record already collected means writing the layer again.
            if (
                record
                and self.index.touch_blob(record.digest)
                and self.storage.size(record.digest) == record.size
            ):
                return LayerBlob(record.digest, record.diff_id, record.size)
            blob = create()
            self.index.put_blob(BlobRecord(blob.digest, blob.size, OCI_LAYER))
            self.index.put_layer(LayerRecord(key, blob.digest, blob.diff_id, blob.size))
            return blob

        return BuiltLayer(self._layer_flights.run(key, create_once), history)

    def _store_layer(
        self, paths: Sequence[str], write: Callable[[Sequence[str], Storage], LayerBlob]
    ) -> BuiltLayer:
        history = HistoryEntry(
            created_by="nix store paths: " + " ".join(paths),
            comment=f"{len(paths)} store paths",
        )
        return self._cached_layer(
            # The key does not say how the layer was made: both ways give the same bytes.
            _layer_key("store", paths),
            history,
            lambda: write(paths, self.storage),
        )

    def _symlink_layer(self, roots: Sequence[str], root: ImageRoot) -> BuiltLayer:
        history = HistoryEntry(
            created_by="symlink layer: " + " ".join(roots),
            comment="/bin, /lib, /share, /etc ... of the requested packages",
        )
        kind = f"symlinks-v{SYMLINK_LAYER_FORMAT}"
        return self._cached_layer(
            _layer_key(kind, roots), history, lambda: write_image_root_layer(root, self.storage)
        )

    def _publish(
        self,
        key: str,
        request: ImageRequest,
        root: ImageRoot,
        layers: Sequence[BuiltLayer],
    ) -> ImageRecord:
        """Config, then both manifests, then the image record: nothing refers to a missing blob."""
        config = ImageConfig(
            architecture=request.platform.architecture,
            diff_ids=tuple(layer.blob.diff_id for layer in layers),
            history=tuple(layer.history for layer in layers),
            ca_bundle=root.ca_bundle,
            has_bash=root.has_bash,
            variant=request.platform.variant,
        ).to_json()
        config_digest = sha256_digest(config)
        put_bytes(self.storage, config_digest, config, OCI_CONFIG)
        self.index.put_blob(BlobRecord(config_digest, len(config), OCI_CONFIG))

        config_descriptor = Descriptor(OCI_CONFIG, config_digest, len(config))
        layer_descriptors = tuple(
            Descriptor(OCI_LAYER, layer.blob.digest, layer.blob.size) for layer in layers
        )
        oci = ImageManifest(False, config_descriptor, layer_descriptors).stored()
        docker = ImageManifest(True, config_descriptor, layer_descriptors).stored()
        self.index.put_manifest(oci)
        self.index.put_manifest(docker)
        record = ImageRecord(key, oci.digest, docker.digest)
        self.index.put_image(record)
        return record
