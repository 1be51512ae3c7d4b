"""Build records: one per cold request for an image, written where the registry sees the whole
build (the tag resolved, the builder's report, the outcome), kept within a count and an age.

`nixery serve` and the Cloud Function write them the same way; the Cloud Run builder's part
arrives through the build contract (BuildOutcome carries its BuildReport).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field

from nixery.build.contract import (
    BuildError,
    BuildReport,
    ImageRequest,
    PackagesNotFound,
    Revision,
)
from nixery.index import BuildOutcomeKind, BuildRecord, Index, LayerSummary, Phase

log = logging.getLogger(__name__)

DEFAULT_KEEP = 1000
DEFAULT_MAX_AGE_DAYS = 30.0
# Pruning costs a query; once every this many records is enough to stay near the bound.
PRUNE_EVERY = 20
_USERINFO = re.compile(r"(?<=://)[^/@]*@")


def public_source(source_id: str) -> str:
    """The source as records and pages show it: a URL's `user:password@` removed."""
    return _USERINFO.sub("", source_id)


def new_build_id(now: float) -> str:
    """Sortable by start time, unguessable enough to not enumerate: ms clock + 48 random bits."""
    return f"{int(now * 1000):012x}{os.urandom(6).hex()}"


BUILD_ID_RE = re.compile(r"[0-9a-f]{24}")


@dataclass
class PendingBuild:
    """A build under way: what the registry knows before the builder reports."""

    id: str
    key: str
    request: ImageRequest
    tag: str
    revision: Revision
    client: str
    started_at: float
    resolve_seconds: float
    report: BuildReport = field(init=False)

    def __post_init__(self) -> None:
        self.report = BuildReport(self.id)


@dataclass
class BuildRecorder:
    index: Index
    keep: int = DEFAULT_KEEP
    max_age_days: float = DEFAULT_MAX_AGE_DAYS
    _written: int = 0

    def start(
        self,
        key: str,
        request: ImageRequest,
        tag: str,
        revision: Revision,
        client: str,
        started_at: float,
        resolve_seconds: float,
    ) -> PendingBuild:
        pending = PendingBuild(
            new_build_id(started_at),
            key,
            request,
            tag,
            revision,
            client,
            started_at,
            resolve_seconds,
        )
        log.info(
            "build %s started: %s:%s",
            pending.id,
            request.repository,
            tag,
            extra={"build_id": pending.id, "repository": request.repository},
        )
        return pending

    def finish(
        self, pending: PendingBuild, manifest_digest: str = "", error: BaseException | None = None
    ) -> BuildRecord:
        """Write the record of `pending`, ended by its image or by `error`."""
        report = pending.report
        outcome: BuildOutcomeKind
        refused: dict[str, str] = {}
        message = ""
        log_text = ""
        if error is None:
            outcome = "cached" if report.cached else "built"
        elif isinstance(error, PackagesNotFound):
            outcome = "refused"
            refused = {
                name: f"no such package in {public_source(pending.revision.source_id)} "
                f"at {pending.revision.commit[:12]}"
                for name in error.names
            }
            message = "unknown packages: " + ", ".join(error.names)
        else:
            outcome = "failed"
            message = error.message if isinstance(error, BuildError) else str(error)
            log_text = error.log_tail if isinstance(error, BuildError) else ""
        phases = [Phase("resolve", 0.0, pending.resolve_seconds)]
        for name, seconds in report.phases:
            start = phases[-1].start + phases[-1].seconds
            phases.append(Phase(name, round(start, 4), round(seconds, 4)))
        record = BuildRecord(
            id=pending.id,
            repository=pending.request.repository,
            tag=pending.tag,
            key=pending.key,
            source=public_source(pending.revision.source_id),
            commit=pending.revision.commit,
            client=pending.client,
            started_at=pending.started_at,
            ended_at=time.time(),
            outcome=outcome,
            message=message,
            refused=refused,
            phases=tuple(phases),
            layers=tuple(
                LayerSummary(layer.digest, layer.size, tuple(layer.paths))
                for layer in report.layers
            ),
            manifest_digest=manifest_digest,
            log=log_text,
        )
        try:
            self.index.put_build(record)
            self._written += 1
            if self._written % PRUNE_EVERY == 1:
                self.prune()
        except Exception:
            # A record is for people; failing to keep one must not fail the pull.
            log.exception("cannot store build record %s", record.id)
        log.info(
            "build %s %s: %s:%s in %.1fs",
            record.id,
            outcome,
            record.repository,
            record.tag,
            record.seconds,
            extra={
                "build_id": record.id,
                "outcome": outcome,
                "repository": record.repository,
                "seconds": round(record.seconds, 3),
            },
        )
        return record

    def prune(self) -> int:
        before = time.time() - self.max_age_days * 86400
        return self.index.prune_builds(self.keep, before)
