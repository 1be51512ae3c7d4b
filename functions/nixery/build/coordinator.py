"""Exactly one build per image key: in-process single-flight, plus an index lease across processes."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from nixery.build.contract import (
    BuilderBusy,
    BuildReport,
    ImageRequest,
    IndexRequest,
    PackagesRefused,
    Platform,
    Revision,
    image_key,
)
from nixery.build.multiplatform import publish_index
from nixery.index import ImageRecord, Index
from nixery.util.singleflight import SingleFlight


class ImageBuilding(Protocol):
    """What the coordinator runs: one image for one platform."""

    def build(
        self,
        key: str,
        request: ImageRequest,
        revision: Revision,
        report: BuildReport | None = None,
    ) -> ImageRecord: ...


class BuildCoordinator:
    """Runs builds so that N concurrent requests for one image, on any number of processes
    sharing the index, produce one build; the others wait for its image record."""

    def __init__(
        self,
        builder: ImageBuilding,
        index: Index,
        lease_seconds: float,
        wait_seconds: float,
        poll_seconds: float = 0.25,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.builder = builder
        self.index = index
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self._sleep = sleep
        self._flights: SingleFlight[ImageRecord] = SingleFlight()
        self._owner_prefix = f"{socket.gethostname()}-{os.getpid()}"

    def build(
        self,
        key: str,
        request: ImageRequest,
        revision: Revision,
        report: BuildReport | None = None,
    ) -> ImageRecord:
        build_report = report or BuildReport()
        return self._one_flight(
            key,
            request.repository,
            build_report,
            lambda: self.builder.build(key, request, revision, build_report),
        )

    def build_index(self, key: str, request: IndexRequest, revision: Revision) -> ImageRecord:
        """Every platform's image under the index's lease (each image also under its own, so an
        `arm64/...` pull of the same packages shares the build), then the index over them."""
        return self._one_flight(
            key,
            request.repository,
            BuildReport(),
            lambda: self._build_platforms(key, request, revision),
        )

    def _one_flight(
        self, key: str, repository: str, report: BuildReport, build: Callable[[], ImageRecord]
    ) -> ImageRecord:
        leader = False

        def lead() -> ImageRecord:
            nonlocal leader
            leader = True
            return self._build_or_wait(key, repository, report, build)

        record = self._flights.run(key, lead)
        # A request that joined another's build in this process found the image built for it.
        report.cached = report.cached or not leader
        return record

    def _build_platforms(self, key: str, request: IndexRequest, revision: Revision) -> ImageRecord:
        images = request.images()

        def build_one(image: ImageRequest) -> ImageRecord | PackagesRefused:
            try:
                return self.build(image_key(revision, image), image, revision)
            except PackagesRefused as refusal:
                return refusal

        # The platforms' Nix builds overlap; the builder's own slots still bound the machine.
        with ThreadPoolExecutor(len(images), thread_name_prefix="platform") as pool:
            results = list(pool.map(build_one, images))
        built: list[tuple[Platform, ImageRecord]] = []
        refused: dict[str, list[str]] = {}
        for image, result in zip(images, results, strict=True):
            if isinstance(result, PackagesRefused):
                refused[image.platform.spec] = result.names
            else:
                built.append((image.platform, result))
        if not built:
            reasons = {
                refusal.name: refusal
                for result in results
                if isinstance(result, PackagesRefused)
                for refusal in result.refusals
            }
            raise PackagesRefused(
                [reasons[name] for name in sorted(reasons)],
                request.repository,
                by_platform=refused,
            )
        return publish_index(self.index, key, built, refused)

    def _build_or_wait(
        self, key: str, repository: str, report: BuildReport, build: Callable[[], ImageRecord]
    ) -> ImageRecord:
        owner = f"{self._owner_prefix}-{uuid.uuid4().hex[:12]}"
        give_up = time.monotonic() + self.wait_seconds
        while True:
            record = self.index.get_image(key)
            if record is not None:
                report.cached = True
                return record
            if self.index.try_acquire_lease(key, owner, self.lease_seconds):
                return self._build_under_lease(key, owner, report, build)
            if time.monotonic() > give_up:
                raise BuilderBusy(
                    f"another builder is still building {repository}", repository=repository
                )
            self._sleep(self.poll_seconds)

    def _build_under_lease(
        self, key: str, owner: str, report: BuildReport, build: Callable[[], ImageRecord]
    ) -> ImageRecord:
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(self.lease_seconds / 3):
                self.index.try_acquire_lease(key, owner, self.lease_seconds)

        keeper = threading.Thread(target=heartbeat, name=f"lease-{key[:8]}", daemon=True)
        keeper.start()
        try:
            # A finished build may have landed between our miss and our lease.
            found = self.index.get_image(key)
            if found is not None:
                report.cached = True
                return found
            return build()
        finally:
            done.set()
            keeper.join()
            self.index.release_lease(key, owner)
