"""The registry's read side: references -> manifests and blobs, building what is missing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeGuard

from nixery.build.contract import (
    AMD64,
    COMMIT_RE,
    DEFAULT_POLICY,
    Builder,
    BuildError,
    BuildFailed,
    BuildTimedOut,
    IndexRequest,
    NixTooOld,
    PackagePolicy,
    PackagesRefused,
    Platform,
    Revision,
    SourceUnavailable,
    image_key,
    index_key,
    parse_platforms,
)
from nixery.config import Config
from nixery.index import BlobRecord, ImageRecord, Index, StoredManifest
from nixery.oci import DIGEST_RE, InvalidDigest
from nixery.registry.hotcache import ManifestCache
from nixery.registry.limits import ClientBuildLimit
from nixery.registry.names import (
    DEFAULT_MAX_PACKAGES,
    names_platform,
    parse_image_name,
    validate_repository,
    validate_tag,
)
from nixery.registry.negotiation import index_form, prefers_docker
from nixery.registry.records import BuildRecorder, PendingBuild
from nixery.registry.sources import PackageSource
from nixery.storage import Storage
from nixery.util.logs import log_context
from nixery.util.lru import Lru

NOT_FOUND_MEMORY = 4096
# Images whose last pull this process marked in the index (garbage collection keeps what is
# pulled): a warm pull writes the mark at most once a day per image, so it stays read-only.
PULL_MARK_MEMORY = 16384
PULL_MARK_INTERVAL = 86400.0
# Names already recorded for the catalog by this process: each is written to the index once.
CATALOGUED_MEMORY = 4096
CATALOG_DEFAULT_PAGE = 100
CATALOG_MAX_PAGE = 1000


def build_path(build_id: str) -> str:
    """Where the pages show a build (nixery.registry.pages)."""
    return f"/builds/{build_id}"


# Revisions found to need a newer Nix than the builder's.
MISCONFIGURED_MEMORY = 256
# Images whose build failed, each remembered for a bounded time (Config.failed_build_memory).
FAILED_BUILD_MEMORY = 4096


def remembered_failure(error: BuildError) -> TypeGuard[BuildFailed]:
    """A failure a retry of the same image key would meet again: Nix ran and failed. Not a
    timeout (what Nix finished is kept, so a retry goes further) nor an unreachable source."""
    return isinstance(error, BuildFailed) and not isinstance(
        error, BuildTimedOut | SourceUnavailable
    )


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
        cold_wait_limit: int | None = None,
        platforms: tuple[Platform, ...] = (AMD64,),
        policy: PackagePolicy = DEFAULT_POLICY,
        failed_build_memory: float = Config.failed_build_memory,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`cold_wait_limit`: requests that may wait for cold builds at once, all clients.
        `failed_build_memory`: seconds a failed build is answered without running Nix again."""
        self.source = source
        self.index = index
        self.storage = storage
        self.builder = builder
        self.max_packages = max_packages
        self.policy = policy
        self.cold_builds = ClientBuildLimit(client_build_limit, cold_wait_limit)
        self.cache = cache if cache is not None else ManifestCache()
        self._catalogued: Lru[str, bool] = Lru(CATALOGUED_MEMORY)
        self._pull_marks: Lru[str, float] = Lru(PULL_MARK_MEMORY)
        # What a tag is built for; with more than one, a tag answers an image index.
        self.platforms = platforms
        # A package set at one revision, under one policy (both in the image key), refuses the
        # same names for the same reasons for good ("not found", unfree, an abort...);
        # remembered so retries of a typo do not re-run Nix, with the build record that found
        # them, which retries point to.
        self._refused: Lru[str, tuple[PackagesRefused, str]] = Lru(NOT_FOUND_MEMORY)
        # A revision that needs a newer Nix than the builder's needs it for every image.
        self._nix_too_old: Lru[tuple[str, str], NixTooOld] = Lru(MISCONFIGURED_MEMORY)
        # A failed build fails the same way when retried at once: the image key holds the
        # revision, so the same derivations are built again. Not for good, though: a build can
        # be flaky (a test racing a timer, a full disk), so the memory lasts a bounded time.
        self.failed_build_memory = failed_build_memory
        self._clock = clock
        self._failed: Lru[str, tuple[BuildFailed, str]] = Lru(FAILED_BUILD_MEMORY, clock=clock)
        self.records = records if records is not None else BuildRecorder(index)

    @classmethod
    def from_config(
        cls,
        config: Config,
        source: PackageSource,
        index: Index,
        storage: Storage,
        builder: Builder,
        cold_wait_limit: int | None = None,
    ) -> RegistryService:
        """The service with the settings both deployments read (nixery.config)."""
        return cls(
            source,
            index,
            storage,
            builder,
            max_packages=config.max_packages,
            client_build_limit=config.client_build_limit,
            records=BuildRecorder(index, config.build_records, config.build_record_days),
            cold_wait_limit=cold_wait_limit,
            platforms=parse_platforms(config.platforms),
            policy=PackagePolicy(config.allow_unfree, config.permitted_insecure_packages),
            failed_build_memory=config.failed_build_memory,
        )

    def manifest(
        self, repository: str, reference: str, accept: str | None, client: str = ""
    ) -> StoredManifest:
        """`client` names who asks (identity or address), for the per-client cold-build limit."""
        if ":" in reference:  # tags cannot hold a colon; digests always do
            validate_repository(repository)
            return self.manifest_by_digest(reference)
        request = replace(parse_image_name(repository, self.max_packages), policy=self.policy)
        validate_tag(reference)
        started_at = time.time()
        resolve_started = time.monotonic()
        revision = self.source.resolve(reference)
        resolve_seconds = time.monotonic() - resolve_started
        if revision is None:
            raise ManifestUnknown(
                f"{repository}:{reference}", {"tag": reference, "reason": "no such revision"}
            )
        pinned = COMMIT_RE.fullmatch(reference) is not None
        # An `arm64/...` name asks for one platform, whatever the setting.
        form = "manifest" if names_platform(repository) else index_form(accept)
        if not names_platform(repository):
            request = replace(request, platform=self.platforms[0])

        def start(key: str) -> PendingBuild:
            return self.records.start(
                key, request, reference, revision, client, started_at, resolve_seconds
            )

        build: Callable[[PendingBuild], ImageRecord]
        if len(self.platforms) > 1 and form != "manifest":
            multi = IndexRequest(request.repository, request.packages, self.platforms, self.policy)
            key = index_key(revision, multi)
            docker = form == "docker"

            def build(pending: PendingBuild) -> ImageRecord:
                return self.builder.build_index(key, multi, revision)

        else:
            # Keyed by the resolved image key, never the raw tag: a moved tag is a new key.
            key = image_key(revision, request)
            docker = prefers_docker(accept)

            def build(pending: PendingBuild) -> ImageRecord:
                return self.builder.build(key, request, revision, pending.report)

        record = self._record(
            key,
            client,
            lambda: self._guarded(
                key, request.repository, revision, lambda: start(key), pinned, build
            ),
        )
        self._remember_repository(repository)
        digest = record.docker_digest if docker else record.oci_digest
        manifest = self._stored_manifest(digest)
        if manifest is None:
            raise ManifestUnknown(digest, {"reason": "index lost the manifest"})
        return manifest

    def _record(self, key: str, client: str, build: Callable[[], ImageRecord]) -> ImageRecord:
        record = self.cache.image(key)
        if record is None:
            record = self.index.get_image(key)
            if record is None:
                return self._build_record(key, client, build)
            self.cache.put_image(record)
        if not self._mark_pulled(key):
            # Garbage collected since this process cached or read it: build it again.
            self.cache.drop_image(key)
            return self._build_record(key, client, build)
        return record

    def _build_record(self, key: str, client: str, build: Callable[[], ImageRecord]) -> ImageRecord:
        with self.cold_builds.slot(client, key):
            record = build()
        self.cache.put_image(record)
        # A record just built (or just found built by another process) counts as pulled now.
        self._pull_marks.put(key, time.time())
        return record

    def _mark_pulled(self, key: str) -> bool:
        """Mark the image pulled, at most once a day per image in this process; False when the
        image's record is gone. Collection keeps images pulled within its retention (at least a
        day, nixery.config), so one cached and marked in the last day is never gone."""
        now = time.time()
        marked = self._pull_marks.get(key)
        if marked is not None and now - marked < PULL_MARK_INTERVAL:
            return True
        if not self.index.mark_pulled(key, now):
            self._pull_marks.pop(key)
            return False
        self._pull_marks.put(key, now)
        return True

    def _stored_manifest(self, digest: str) -> StoredManifest | None:
        manifest = self.cache.manifest(digest)
        if manifest is None:
            manifest = self.index.get_manifest(digest)
            if manifest is not None:
                self.cache.put_manifest(manifest)
        return manifest

    def _guarded(
        self,
        key: str,
        repository: str,
        revision: Revision,
        start: Callable[[], PendingBuild],
        pinned: bool,
        build: Callable[[PendingBuild], ImageRecord],
    ) -> ImageRecord:
        """`pinned`: the client named the commit, so a source that lacks it is the client's miss.
        Every build that runs leaves a record; a failure names it for the client, and so does
        the answer from memory to a retry (which starts no build, so leaves no record)."""
        refused_before = self._refused.get(key)
        if refused_before is not None:
            before, build_id = refused_before
            refused = PackagesRefused(before.refusals, repository, by_platform=before.by_platform)
            refused.build_id = build_id
            raise refused
        failed_before = self._failed.get(key)
        if failed_before is not None:
            failure, build_id = failed_before
            failed = BuildFailed(failure.message, failure.log_tail, repository)
            failed.build_id = build_id
            raise failed
        revision_key = (revision.source_id, revision.commit)
        too_old = self._nix_too_old.get(revision_key)
        if too_old is not None:
            raise NixTooOld(too_old.source, too_old.required, too_old.running, repository)
        pending = start()
        try:
            with log_context(build_id=pending.id):
                record = build(pending)
        except SourceUnavailable as error:
            self.records.finish(pending, error=error)
            if pinned:
                raise ManifestUnknown(
                    f"{repository}:{revision.commit}",
                    {
                        "tag": revision.commit,
                        "reason": "the package source has no such commit, or cannot be fetched",
                        "log": error.log_tail,
                        "build": build_path(pending.id),
                    },
                ) from None
            error.repository = repository
            error.build_id = pending.id
            raise
        except BuildError as error:
            self.records.finish(pending, error=error)
            if isinstance(error, PackagesRefused):
                self._refused.put(key, (error, pending.id))
            if isinstance(error, NixTooOld):
                self._nix_too_old.put(revision_key, error)
            if remembered_failure(error) and self.failed_build_memory > 0:
                expires_at = self._clock() + self.failed_build_memory
                self._failed.put(key, (error, pending.id), expires_at=expires_at)
            error.repository = repository
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
