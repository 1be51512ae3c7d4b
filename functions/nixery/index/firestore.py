"""The cloud index in Firestore (native mode). The data model is in docs/firestore-model.md.

Every record is keyed by its content or by a hash of its inputs, so writes are `create()` and
the first one wins: no read-modify-write transactions, which contend badly on hot documents.
The build lease uses `create()` as its lock and an update-time precondition for takeovers.

Every call has a deadline (`deadline` seconds, retries of transient errors included; each attempt
at most a third of it): a Firestore that stops answering makes a method raise StorageUnavailable
(503 + Retry-After at the API edge) after that long, never hang the request. The error's text
(addresses, gRPC status) goes to the log, not to the client.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from google.api_core import exceptions as api_exceptions
from google.api_core.exceptions import AlreadyExists, FailedPrecondition, NotFound
from google.api_core.retry import Retry, if_exception_type
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from nixery.index import (
    BlobEntry,
    BlobRecord,
    BuildRecord,
    ImageEntry,
    ImageRecord,
    LayerRecord,
    ManifestEntry,
    StoredManifest,
)
from nixery.storage import StorageUnavailable

log = logging.getLogger(__name__)

# A Firestore document is at most 1 MiB including field names and overhead; a manifest is a
# few KB, so anything near the limit is a bug upstream rather than something to split.
MAX_MANIFEST_BYTES = 900 * 1024
# Ids in this alphabet are used as they are (readable in the console); anything else, such as a
# repository name with "/", is hashed. "~" is outside the alphabet, so the two never collide.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.:+-]{1,256}")
# A lost race for a lease retries this often before giving up (returning "not acquired").
_LEASE_ATTEMPTS = 5
# How long one call may take, retries included, unless the caller says otherwise.
DEFAULT_DEADLINE_SECONDS = 30.0
# Transient failures worth another attempt within the deadline (an attempt that timed out too).
_TRANSIENT = if_exception_type(
    api_exceptions.ServiceUnavailable,
    api_exceptions.InternalServerError,
    api_exceptions.DeadlineExceeded,
    api_exceptions.TooManyRequests,
    api_exceptions.Aborted,
)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _unavailable_on_failure(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Firestore failing or out of time (past the call's deadline) is StorageUnavailable; its
    text stays in the log. The outcomes a method handles itself (AlreadyExists, NotFound, a
    failed precondition) never get here."""

    @functools.wraps(method)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except api_exceptions.GoogleAPIError as error:
            log.warning("Firestore %s failed: %s", method.__name__, error)
            raise StorageUnavailable(f"Firestore {method.__name__}: {error}") from error

    return guarded


def _seconds(value: object, fallback: datetime | None) -> float:
    """A stored Unix time, else the document's own time (records written before GC existed)."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    return fallback.timestamp() if fallback is not None else 0.0


def document_id(key: str) -> str:
    """A valid, collision-free document id for `key`."""
    if _PLAIN_ID.fullmatch(key) and key not in {".", ".."} and not key.startswith("__"):
        return key
    return "~" + hashlib.sha256(key.encode()).hexdigest()


class FirestoreIndex:
    def __init__(
        self,
        client: firestore.Client,
        prefix: str = "",
        deadline: float = DEFAULT_DEADLINE_SECONDS,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.deadline = deadline
        # Passed to every call: `retry` bounds the whole call, `timeout` each attempt.
        self._call: dict[str, Any] = {
            "retry": Retry(
                predicate=_TRANSIENT, initial=0.2, maximum=2.0, multiplier=2.0, timeout=deadline
            ),
            "timeout": max(1.0, deadline / 3),
        }
        self.images = client.collection(prefix + "images")
        self.manifests = client.collection(prefix + "manifests")
        self.layers = client.collection(prefix + "layers")
        self.blobs = client.collection(prefix + "blobs")
        self.repositories = client.collection(prefix + "repositories")
        self.leases = client.collection(prefix + "leases")
        self.builds = client.collection(prefix + "builds")

    def _get(self, collection: firestore.CollectionReference, key: str) -> dict[str, Any] | None:
        snapshot = collection.document(document_id(key)).get(**self._call)
        return snapshot.to_dict() if snapshot.exists else None

    def _create(
        self, collection: firestore.CollectionReference, key: str, data: dict[str, Any]
    ) -> None:
        with contextlib.suppress(AlreadyExists):
            collection.document(document_id(key)).create(data, **self._call)

    def _create_or_stamp(
        self, collection: firestore.CollectionReference, key: str, data: dict[str, Any], field: str
    ) -> None:
        """Create the document, or if it exists set only its `field` (a time) to `data`'s."""
        reference = collection.document(document_id(key))
        try:
            reference.create(data, **self._call)
        except AlreadyExists:
            try:
                reference.update({field: data[field]}, **self._call)
            except NotFound:
                # Collected between the two calls: create it again (the first writer is us).
                with contextlib.suppress(AlreadyExists):
                    reference.create(data, **self._call)

    def _stamp(
        self, collection: firestore.CollectionReference, key: str, field: str, at: float
    ) -> bool:
        try:
            collection.document(document_id(key)).update({field: at}, **self._call)
        except NotFound:
            return False
        return True

    def _delete_if_older(
        self, collection: firestore.CollectionReference, key: str, field: str, before: float
    ) -> bool:
        """Delete if the document's `field` is before `before`: a precondition on the update
        time we read makes check and delete one step (a stamp meanwhile fails the delete)."""
        reference = collection.document(document_id(key))
        snapshot = reference.get(**self._call)
        if not snapshot.exists:
            return False
        if _seconds((snapshot.to_dict() or {}).get(field), snapshot.create_time) >= before:
            return False
        try:
            reference.delete(
                option=self.client.write_option(last_update_time=snapshot.update_time),
                **self._call,
            )
        except (FailedPrecondition, NotFound):
            return False
        return True

    @_unavailable_on_failure
    def get_image(self, key: str) -> ImageRecord | None:
        data = self._get(self.images, key)
        if data is None:
            return None
        return ImageRecord(data["key"], data["oci_digest"], data["docker_digest"])

    @_unavailable_on_failure
    def put_image(self, record: ImageRecord) -> None:
        self._create(
            self.images,
            record.key,
            {
                "key": record.key,
                "oci_digest": record.oci_digest,
                "docker_digest": record.docker_digest,
                "created_at": firestore.SERVER_TIMESTAMP,
                "pulled_at": time.time(),
            },
        )

    def mark_pulled(self, key: str, at: float) -> bool:
        return self._stamp(self.images, key, "pulled_at", at)

    def list_images(self) -> Iterator[ImageEntry]:
        fields = ["key", "oci_digest", "docker_digest", "pulled_at", "created_at"]
        for snapshot in self.images.select(fields).stream(**self._call):
            data = snapshot.to_dict() or {}
            record = ImageRecord(data["key"], data["oci_digest"], data["docker_digest"])
            pulled_at = data.get("pulled_at", data.get("created_at"))
            yield ImageEntry(record, _seconds(pulled_at, snapshot.create_time))

    def delete_image(self, key: str, pulled_before: float) -> bool:
        return self._delete_if_older(self.images, key, "pulled_at", pulled_before)

    @_unavailable_on_failure
    def get_manifest(self, digest: str) -> StoredManifest | None:
        data = self._get(self.manifests, digest)
        if data is None:
            return None
        return StoredManifest(data["digest"], data["media_type"], bytes(data["body"]))

    @_unavailable_on_failure
    def put_manifest(self, manifest: StoredManifest) -> None:
        if len(manifest.body) > MAX_MANIFEST_BYTES:
            raise ValueError(
                f"manifest {manifest.digest} is {len(manifest.body)} bytes, "
                f"over the {MAX_MANIFEST_BYTES} bytes kept inline in one document"
            )
        self._create_or_stamp(
            self.manifests,
            manifest.digest,
            {
                "digest": manifest.digest,
                "media_type": manifest.media_type,
                "body": manifest.body,
                "size": len(manifest.body),
                "stored_at": time.time(),
            },
            "stored_at",
        )

    def list_manifests(self) -> Iterator[ManifestEntry]:
        # Without the bodies: sizes are stored beside them (older documents count as 0 bytes).
        for snapshot in self.manifests.select(["digest", "size", "stored_at"]).stream(**self._call):
            data = snapshot.to_dict() or {}
            stored_at = _seconds(data.get("stored_at"), snapshot.create_time)
            yield ManifestEntry(data["digest"], int(data.get("size", 0)), stored_at)

    def delete_manifest(self, digest: str, stored_before: float) -> bool:
        return self._delete_if_older(self.manifests, digest, "stored_at", stored_before)

    @_unavailable_on_failure
    def get_layer(self, key: str) -> LayerRecord | None:
        data = self._get(self.layers, key)
        if data is None:
            return None
        return LayerRecord(data["key"], data["digest"], data["diff_id"], int(data["size"]))

    @_unavailable_on_failure
    def put_layer(self, record: LayerRecord) -> None:
        self._create(
            self.layers,
            record.key,
            {
                "key": record.key,
                "digest": record.digest,
                "diff_id": record.diff_id,
                "size": record.size,
            },
        )

    @_unavailable_on_failure
    def get_blob(self, digest: str) -> BlobRecord | None:
        data = self._get(self.blobs, digest)
        if data is None:
            return None
        return BlobRecord(data["digest"], int(data["size"]), data["media_type"])

    @_unavailable_on_failure
    def put_blob(self, record: BlobRecord) -> None:
        self._create_or_stamp(
            self.blobs,
            record.digest,
            {
                "digest": record.digest,
                "size": record.size,
                "media_type": record.media_type,
                "used_at": time.time(),
            },
            "used_at",
        )

    def touch_blob(self, digest: str) -> bool:
        return self._stamp(self.blobs, digest, "used_at", time.time())

    def list_blobs(self) -> Iterator[BlobEntry]:
        for snapshot in self.blobs.select(["digest", "size", "used_at"]).stream(**self._call):
            data = snapshot.to_dict() or {}
            used_at = _seconds(data.get("used_at"), snapshot.create_time)
            yield BlobEntry(data["digest"], int(data["size"]), used_at)

    def delete_blob(self, digest: str, used_before: float) -> bool:
        if not self._delete_if_older(self.blobs, digest, "used_at", used_before):
            return False
        # The layer cache's records of the blob: a single-field equality, Firestore's own index.
        naming = self.layers.where(filter=FieldFilter("digest", "==", digest)).select([])
        for snapshot in naming.stream(**self._call):
            snapshot.reference.delete(**self._call)
        return True

    @_unavailable_on_failure
    def add_repository(self, name: str) -> None:
        # One document per name: adding one never rewrites a shared document (no hot spot, no
        # array growing toward 1 MiB).
        self._create(self.repositories, name, {"name": name})

    @_unavailable_on_failure
    def list_repositories(self, after: str, limit: int) -> list[str]:
        # A range and an order on the same single field: served by Firestore's automatic
        # single-field index, no composite index to deploy. Strings order by UTF-8 bytes.
        query = (
            self.repositories.where(filter=FieldFilter("name", ">", after))
            .order_by("name")
            .limit(limit)
        )
        return [str(snapshot.get("name")) for snapshot in query.stream(**self._call)]

    @_unavailable_on_failure
    def try_acquire_lease(self, key: str, owner: str, ttl_seconds: float) -> bool:
        reference = self.leases.document(document_id(key))
        for _ in range(_LEASE_ATTEMPTS):
            now = datetime.now(UTC)
            lease = {
                "key": key,
                "owner": owner,
                "expires_at": now + timedelta(seconds=ttl_seconds),
            }
            try:
                reference.create(lease, **self._call)
                return True
            except AlreadyExists:
                pass
            snapshot = reference.get(**self._call)
            if not snapshot.exists:
                continue  # released between our create and read: try creating again
            if snapshot.get("owner") != owner and snapshot.get("expires_at") > now:
                return False
            try:
                # Renewal or takeover, only if nobody wrote the lease since we read it.
                reference.update(
                    lease,
                    option=self.client.write_option(last_update_time=snapshot.update_time),
                    **self._call,
                )
                return True
            except (FailedPrecondition, NotFound):
                continue  # someone else renewed, took over or released it: look again
        return False

    @_unavailable_on_failure
    def release_lease(self, key: str, owner: str) -> None:
        reference = self.leases.document(document_id(key))
        snapshot = reference.get(**self._call)
        if not snapshot.exists or snapshot.get("owner") != owner:
            return
        # Failing means it expired and was taken over meanwhile: no longer ours to release.
        with contextlib.suppress(FailedPrecondition, NotFound):
            reference.delete(
                option=self.client.write_option(last_update_time=snapshot.update_time),
                **self._call,
            )

    @_unavailable_on_failure
    def put_build(self, record: BuildRecord) -> None:
        # The record as one JSON string (at most ~70 KB with its log, far under 1 MiB), beside
        # the one field queries order by: no composite index needed.
        self.builds.document(document_id(record.id)).set(
            {"started_at": record.started_at, "record": record.to_json()}, **self._call
        )

    @_unavailable_on_failure
    def get_build(self, build_id: str) -> BuildRecord | None:
        data = self._get(self.builds, build_id)
        return BuildRecord.from_json(data["record"]) if data else None

    @_unavailable_on_failure
    def recent_builds(self, limit: int) -> list[BuildRecord]:
        query = self.builds.order_by("started_at", direction=firestore.Query.DESCENDING)
        snapshots = query.limit(limit).stream(**self._call)
        return [BuildRecord.from_json(snapshot.get("record")) for snapshot in snapshots]

    def _prunable(
        self, keep: int, before: float, fields: list[str]
    ) -> dict[str, firestore.DocumentSnapshot]:  # type: ignore[type-arg]
        old = self.builds.where(filter=FieldFilter("started_at", "<", before))
        surplus = (
            self.builds.order_by("started_at", direction=firestore.Query.DESCENDING)
            .offset(keep)
            .select(fields)
        )
        dropped = {
            snapshot.reference.path: snapshot
            for snapshot in old.select(fields).stream(**self._call)
        }
        dropped.update(
            {snapshot.reference.path: snapshot for snapshot in surplus.stream(**self._call)}
        )
        return dropped

    @_unavailable_on_failure
    def prunable_builds(self, keep: int, before: float) -> list[str]:
        # The records themselves (the ids may be hashed into document ids): only for a dry run.
        prunable = self._prunable(keep, before, ["record"]).values()
        records = [BuildRecord.from_json(snapshot.get("record")) for snapshot in prunable]
        return [record.id for record in sorted(records, key=lambda r: (r.started_at, r.id))]

    @_unavailable_on_failure
    def prune_builds(self, keep: int, before: float) -> int:
        dropped = self._prunable(keep, before, [])
        for snapshot in dropped.values():
            snapshot.reference.delete(**self._call)
        return len(dropped)
