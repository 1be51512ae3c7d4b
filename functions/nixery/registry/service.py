"""The registry's read side: references -> manifests and blobs, building what is missing."""

from __future__ import annotations

import time
from typing import Any

from nixery.build.contract import (
    COMMIT_RE,
    Builder,
    BuildError,
    PackagesNotFound,
    SourceUnavailable,
    image_key,
)
from nixery.config import Config
from nixery.index import BlobRecord, ImageRecord, Index, StoredManifest
from nixery.oci import DIGEST_RE, InvalidDigest
from nixery.registry.hotcache import ManifestCache
from nixery.registry.limits import ClientBuildLimit
from nixery.registry.names import (
    DEFAULT_MAX_PACKAGES,
    parse_image_name,
    validate_repository,
    validate_tag,
)
from nixery.registry.negotiation import prefers_docker
from nixery.registry.records import BuildRecorder, PendingBuild
from nixery.registry.sources import PackageSource
from nixery.storage import Storage
from nixery.util.logs import log_context
from nixery.util.lru import Lru

NOT_FOUND_MEMORY = 4096
# Names already recorded for the catalog by this process: each is written to the index once.
CATALOGUED_MEMORY = 4096
CATALOG_DEFAULT_PAGE = 100
CATALOG_MAX_PAGE = 1000


def build_path(build_id: str) -> str:
    """Where the pages show a build (nixery.registry.pages)."""
    return f"/builds/{build_id}"


class ManifestUnknown(LookupError):
    def __init__(self, reference: str, detail: Any = None) -> None:
        super().__init__(f"manifest unknown: {reference}")
        self.reference = reference
        self.detail = detail


class BlobUnknown(LookupError):
    def __init__(self, digest: str) -> None:
        super().__init__(f"blob unknown: {digest}")
        self.digest = digest


class RegistryService:
    def __init__(
        self,
        source: PackageSource,
        index: Index,
        storage: Storage,
        builder: Builder,
        max_packages: int = DEFAULT_MAX_PACKAGES,
        client_build_limit: int = Config.client_build_limit,
        cache: ManifestCache | None = None,
        records: BuildRecorder | None = None,
    ) -> None:
        self.source = source
        self.index = index
        self.storage = storage
        self.builder = builder
        self.max_packages = max_packages
        self.cold_builds = ClientBuildLimit(client_build_limit)
        self.cache = cache if cache is not None else ManifestCache()
        self._catalogued: Lru[str, bool] = Lru(CATALOGUED_MEMORY)
        # A package set at one revision never grows the packages it lacked, so "not found" for
        # an image key holds for good; remembered so retries of a typo do not re-run Nix.
        # Remembered with the build record that found them missing, which retries point to.
        self._not_found: Lru[str, tuple[list[str], str]] = Lru(NOT_FOUND_MEMORY)
        self.records = records if records is not None else BuildRecorder(index)

    def manifest(
        self, repository: str, reference: str, accept: str | None, client: str = ""
    ) -> StoredManifest:
        """`client` names who asks (identity or address), for the per-client cold-build limit."""
        if ":" in reference:  # tags cannot hold a colon; digests always do
            validate_repository(repository)
            return self.manifest_by_digest(reference)
        request = parse_image_name(repository, self.max_packages)
        validate_tag(reference)
        started_at = time.time()
        resolve_started = time.monotonic()
        revision = self.source.resolve(reference)
        resolve_seconds = time.monotonic() - resolve_started
        if revision is None:
            raise ManifestUnknown(
                f"{repository}:{reference}", {"tag": reference, "reason": "no such revision"}
            )
        # Keyed by the resolved image key, never the raw tag: a moved tag is a new key.
        key = image_key(revision, request)
        record = self.cache.image(key)
        if record is None:
            record = self.index.get_image(key)
            if record is None:
                with self.cold_builds.slot(client, key):
                    pinned = COMMIT_RE.fullmatch(reference) is not None
                    pending = self.records.start(
                        key, request, reference, revision, client, started_at, resolve_seconds
                    )
                    record = self._build(pending, pinned)
            self.cache.put_image(record)
        self._remember_repository(repository)
        digest = record.docker_digest if prefers_docker(accept) else record.oci_digest
        manifest = self._stored_manifest(digest)
        if manifest is None:
            raise ManifestUnknown(digest, {"reason": "index lost the manifest"})
        return manifest

    def _stored_manifest(self, digest: str) -> StoredManifest | None:
        manifest = self.cache.manifest(digest)
        if manifest is None:
            manifest = self.index.get_manifest(digest)
            if manifest is not None:
                self.cache.put_manifest(manifest)
        return manifest

    def _build(self, pending: PendingBuild, pinned: bool) -> ImageRecord:
        """`pinned`: the client named the commit, so a source that lacks it is the client's miss.
        Every build that runs leaves a record; a failure names it for the client."""
        key, request, revision = pending.key, pending.request, pending.revision
        missing_before = self._not_found.get(key)
        if missing_before is not None:
            names, build_id = missing_before
            refused = PackagesNotFound(names, request.repository)
            refused.build_id = build_id
            raise refused
        try:
            with log_context(build_id=pending.id):
                record = self.builder.build(key, request, revision, pending.report)
        except SourceUnavailable as error:
            self.records.finish(pending, error=error)
            if pinned:
                raise ManifestUnknown(
                    f"{request.repository}:{revision.commit}",
                    {
                        "tag": revision.commit,
                        "reason": "the package source has no such commit, or cannot be fetched",
                        "log": error.log_tail,
                        "build": build_path(pending.id),
                    },
                ) from None
            error.repository = request.repository
            error.build_id = pending.id
            raise
        except BuildError as error:
            self.records.finish(pending, error=error)
            if isinstance(error, PackagesNotFound):
                self._not_found.put(key, (error.names, pending.id))
            error.repository = request.repository
            error.build_id = pending.id
            raise
        except Exception as error:
            self.records.finish(pending, error=error)
            raise
        self.records.finish(pending, manifest_digest=record.docker_digest)
        return record

    def _remember_repository(self, repository: str) -> None:
        if self._catalogued.get(repository) is None:
            self.index.add_repository(repository)
            self._catalogued.put(repository, True)

    def manifest_by_digest(self, digest: str) -> StoredManifest:
        if not DIGEST_RE.fullmatch(digest):
            raise InvalidDigest(digest)
        manifest = self._stored_manifest(digest)
        if manifest is None:
            raise ManifestUnknown(digest)
        return manifest

    def blob(self, repository: str, digest: str) -> BlobRecord:
        validate_repository(repository)
        if not DIGEST_RE.fullmatch(digest):
            raise InvalidDigest(digest)
        record = self.index.get_blob(digest)
        if record is None:
            raise BlobUnknown(digest)
        return record

    def tags(self, repository: str) -> list[str]:
        """The tags the source resolves (the same for every name), never what clients typed."""
        parse_image_name(repository, self.max_packages)
        return self.source.tags()

    def catalog(self, last: str, count: int | None) -> tuple[list[str], bool]:
        """One page of the image names served so far, after `last`, and whether more follow.
        `count` (the client's `n`) is capped at CATALOG_MAX_PAGE."""
        limit = CATALOG_DEFAULT_PAGE if count is None else min(count, CATALOG_MAX_PAGE)
        if limit <= 0:
            return [], False
        names = self.index.list_repositories(last, limit + 1)
        return names[:limit], len(names) > limit
