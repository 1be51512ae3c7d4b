"""Exactly one build per image key: in-process single-flight, plus an index lease across processes."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from nixery.build.contract import Builder, BuilderBusy, BuildReport, ImageRequest, Revision
from nixery.index import ImageRecord, Index
from nixery.util.singleflight import SingleFlight


class BuildCoordinator:
    """Runs builds so that N concurrent requests for one image, on any number of processes
    sharing the index, produce one build; the others wait for its image record."""

    def __init__(
        self,
        builder: Builder,
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
        report = report or BuildReport()
        leader = False

        def lead() -> ImageRecord:
            nonlocal leader
            leader = True
            return self._build_or_wait(key, request, revision, report)

        record = self._flights.run(key, lead)
        # A request that joined another's build in this process found the image built for it.
        report.cached = report.cached or not leader
        return record

    def _build_or_wait(
        self, key: str, request: ImageRequest, revision: Revision, report: BuildReport
    ) -> ImageRecord:
        owner = f"{self._owner_prefix}-{uuid.uuid4().hex[:12]}"
        give_up = time.monotonic() + self.wait_seconds
        while True:
            record = self.index.get_image(key)
            if record is not None:
                report.cached = True
                return record
            if self.index.try_acquire_lease(key, owner, self.lease_seconds):
                return self._build_under_lease(key, request, revision, owner, report)
            if time.monotonic() > give_up:
                raise BuilderBusy(
                    f"another builder is still building {request.repository}",
                    repository=request.repository,
                )
            self._sleep(self.poll_seconds)

    def _build_under_lease(
        self,
        key: str,
        request: ImageRequest,
        revision: Revision,
        owner: str,
        report: BuildReport,
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
            return self.builder.build(key, request, revision, report)
        finally:
            done.set()
            keeper.join()
            self.index.release_lease(key, owner)
