"""Garbage collection: expire images nobody pulls, then mark and sweep what they alone used.

One pass, the same on filesystem+SQLite (`nixery gc`) and GCS+Firestore (the builder's `/gc`):

1. The clock is read once: `expired_before` (now - retention) and `grace_before` (now - grace).
2. Images last pulled before `expired_before` are deleted, each only if no pull marked it
   meanwhile (`Index.delete_image` checks and deletes in one step).
3. Mark: every manifest and blob reachable from the remaining images, following image indexes
   to their platform manifests.
4. Sweep: unmarked manifests, blob records (with their layer records) and stored blobs whose
   last put or use is before `grace_before`; a record goes before its blob, each delete again
   conditional on no use meanwhile. Upload leftovers older than the grace; old build records.

Why a build in flight is safe: everything it writes (blobs, manifests) and every cached layer it
reuses (`Index.touch_blob`, before the reuse) is stamped after it started, so within the grace
period, which exceeds any build's time between a layer's stamp and its image's record. A build
that finds a layer's record already collected writes the layer again.

What remains open is a window of one storage call: between deleting a blob's record and its
bytes, a build that found the record gone may publish the same blob again (GCS's publish skips
an existing object) just before the bytes go. A build takes far longer to write a layer than the
collector takes for that call, so it needs a collection and a rebuild of an expired layer to
meet within milliseconds; should they, pulls of that blob are 404 until a build that uses the
layer finds its bytes missing and writes them again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from nixery.config import Config
from nixery.index import Index, ManifestEntry
from nixery.oci import DIGEST_RE
from nixery.storage import Storage

log = logging.getLogger(__name__)

DAY = 86400.0

Kind = Literal["image", "manifest", "blob", "upload", "build"]
KINDS: tuple[Kind, ...] = ("image", "manifest", "blob", "upload", "build")


@dataclass(frozen=True)
class GcPolicy:
    retention_days: float  # images not pulled for this long go
    grace_seconds: float  # nothing put or used more recently goes
    build_records: int  # build records kept, newest first
    build_record_days: float  # and none older than this

    @classmethod
    def of(cls, config: Config) -> GcPolicy:
        return cls(
            config.gc_retention_days,
            config.gc_grace_seconds,
            config.build_records,
            config.build_record_days,
        )


@dataclass(frozen=True)
class Deletion:
    kind: Kind
    name: str  # image key, digest, upload name or build id
    size: int  # bytes freed (0 for images and build records: they hold no bytes of their own)


@dataclass
class GcReport:
    dry_run: bool
    started_at: float
    deleted: list[Deletion] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)  # what stayed, by kind
    seconds: float = 0.0

    def count(self, kind: Kind) -> int:
        return sum(1 for deletion in self.deleted if deletion.kind == kind)

    def bytes(self, kind: Kind | None = None) -> int:
        return sum(d.size for d in self.deleted if kind is None or d.kind == kind)

    def to_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 3),
            "deleted": {
                kind: {"count": self.count(kind), "bytes": self.bytes(kind)} for kind in KINDS
            },
            "deleted_bytes": self.bytes(),
            "kept": self.kept,
        }

    def lines(self) -> list[str]:
        """What was (or in a dry run would be) deleted, one line each, then the totals."""
        verb = "would delete" if self.dry_run else "deleted"
        out = [f"{verb} {d.kind} {d.name} ({d.size} bytes)" for d in self.deleted]
        for kind in KINDS:
            out.append(f"{verb} {self.count(kind)} {kind}(s), {self.bytes(kind)} bytes")
        out.append(f"{verb} {self.bytes()} bytes in all; kept {_kept_text(self.kept)}")
        return out


def _kept_text(kept: dict[str, int]) -> str:
    return ", ".join(f"{count} {kind}(s)" for kind, count in kept.items()) or "nothing"


def referenced_digests(body: bytes) -> tuple[list[str], list[str]]:
    """(manifests, blobs) a stored manifest names: an index's platform manifests, or an image
    manifest's config and layers. A body that is not a manifest names nothing."""
    try:
        document = json.loads(body)
    except ValueError:
        return [], []
    if not isinstance(document, dict):
        return [], []

    def digests(descriptors: object) -> list[str]:
        if isinstance(descriptors, dict):
            descriptors = [descriptors]
        if not isinstance(descriptors, list):
            return []
        found = (d.get("digest") for d in descriptors if isinstance(d, dict))
        return [digest for digest in found if isinstance(digest, str) and DIGEST_RE.match(digest)]

    return digests(document.get("manifests")), [
        *digests(document.get("config")),
        *digests(document.get("layers")),
    ]


def mark(index: Index, roots: Iterable[str]) -> tuple[set[str], set[str]]:
    """The manifests reachable from `roots` (manifest digests) and the blobs they name."""
    manifests: set[str] = set()
    blobs: set[str] = set()
    pending = list(roots)
    while pending:
        digest = pending.pop()
        if digest in manifests:
            continue
        manifests.add(digest)
        stored = index.get_manifest(digest)
        if stored is None:
            continue  # lost or never published: nothing below it to keep
        children, named = referenced_digests(stored.body)
        pending.extend(children)
        blobs.update(named)
    return manifests, blobs


def collect(
    index: Index,
    storage: Storage,
    policy: GcPolicy,
    *,
    dry_run: bool = False,
    now: float | None = None,
    on_deletion: Callable[[Deletion], None] | None = None,
) -> GcReport:
    """One collection (see the module's docstring). `dry_run`: delete nothing, report what
    would go. `now`: the clock, for tests."""
    started = time.monotonic()
    now = time.time() if now is None else now
    expired_before = now - policy.retention_days * DAY
    grace_before = now - policy.grace_seconds
    report = GcReport(dry_run, now)

    def deleted(kind: Kind, name: str, size: int = 0) -> None:
        deletion = Deletion(kind, name, size)
        report.deleted.append(deletion)
        if on_deletion is not None:
            on_deletion(deletion)

    # 1. Expire images.
    roots: list[str] = []
    kept_images = 0
    for entry in list(index.list_images()):
        key = entry.record.key
        if entry.pulled_at < expired_before and (
            dry_run or index.delete_image(key, expired_before)
        ):
            deleted("image", key)
            continue
        kept_images += 1
        roots += [entry.record.oci_digest, entry.record.docker_digest]

    # 2. Mark, from what remains: computed whole before anything below is swept.
    live_manifests, live_blobs = mark(index, roots)

    # 3. Sweep manifests.
    manifests: list[ManifestEntry] = list(index.list_manifests())
    kept_manifests = 0
    for manifest in manifests:
        if manifest.digest in live_manifests or manifest.stored_at >= grace_before:
            kept_manifests += 1
        elif dry_run or index.delete_manifest(manifest.digest, grace_before):
            deleted("manifest", manifest.digest, manifest.size)
        else:
            kept_manifests += 1

    # 4. Sweep blobs: records first (with their layer records), then the stored bytes. Listed
    # before deleting anything, so a blob written from here on is in neither listing.
    records = {entry.digest: entry for entry in index.list_blobs()}
    stored = {entry.name: entry for entry in storage.list_blobs()}
    kept_blobs = 0
    for digest in sorted(records.keys() | stored.keys()):
        record, blob = records.get(digest), stored.get(digest)
        uses = [entry.used_at for entry in (record,) if entry is not None]
        uses += [entry.modified_at for entry in (blob,) if entry is not None]
        size = blob.size if blob is not None else 0
        if digest in live_blobs or max(uses) >= grace_before:
            kept_blobs += 1
            continue
        if dry_run:
            deleted("blob", digest, size)
            continue
        if record is not None and not index.delete_blob(digest, grace_before):
            kept_blobs += 1  # a build reused it meanwhile
            continue
        if record is None and index.get_blob(digest) is not None:
            kept_blobs += 1  # bytes nothing recorded, until a build wrote them again just now
            continue
        if blob is not None:
            storage.delete(digest)
        deleted("blob", digest, size)

    # 5. Leftovers of uploads that never finished (killed writers, crashed copies).
    for upload in list(storage.list_uploads()):
        if upload.modified_at < grace_before:
            if not dry_run:
                storage.delete_upload(upload.name)
            deleted("upload", upload.name, upload.size)

    # 6. Build records, as the registry prunes them after each build.
    build_before = now - policy.build_record_days * DAY
    for build_id in index.prunable_builds(policy.build_records, build_before):
        deleted("build", build_id)
    if not dry_run:
        index.prune_builds(policy.build_records, build_before)

    report.kept = {"image": kept_images, "manifest": kept_manifests, "blob": kept_blobs}
    report.seconds = time.monotonic() - started
    log.info(
        "garbage collection%s: %d images, %d manifests, %d blobs (%d bytes), %d uploads, "
        "%d build records in %.1f s",
        " (dry run)" if dry_run else "",
        report.count("image"),
        report.count("manifest"),
        report.count("blob"),
        report.bytes("blob"),
        report.count("upload"),
        report.count("build"),
        report.seconds,
    )
    return report
