"""The registry's read side: references -> manifests and blobs, building what is missing."""

from __future__ import annotations

from nixery import errors
from nixery.build.coordinator import Builder
from nixery.build.nix import NixError, NixTimeout, SourceUnavailable
from nixery.index import BlobRecord, ImageRecord, Index, StoredManifest
from nixery.oci import DIGEST_RE
from nixery.registry.hotcache import ManifestCache
from nixery.registry.imagekey import PackagesNotFound, image_key
from nixery.registry.limits import ClientBuildLimit
from nixery.registry.names import (
    DEFAULT_MAX_PACKAGES,
    ImageRequest,
    parse_image_name,
    validate_repository,
    validate_tag,
)
from nixery.registry.negotiation import prefers_docker
from nixery.registry.sources import COMMIT_RE, PackageSource, Revision, SourceError
from nixery.storage import Storage
from nixery.util.lru import Lru

NOT_FOUND_MEMORY = 4096
# Names already recorded for the catalog by this process: each is written to the index once.
CATALOGUED_MEMORY = 4096
CATALOG_DEFAULT_PAGE = 100
CATALOG_MAX_PAGE = 1000


class RegistryService:
    def __init__(
        self,
        source: PackageSource,
        index: Index,
        storage: Storage,
        builder: Builder,
        max_packages: int = DEFAULT_MAX_PACKAGES,
        client_build_limit: int = 2,
        cache: ManifestCache | None = None,
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
        self._not_found: Lru[str, list[str]] = Lru(NOT_FOUND_MEMORY)

    def manifest(
        self, repository: str, reference: str, accept: str | None, client: str = ""
    ) -> StoredManifest:
        """`client` names who asks (identity or address), for the per-client cold-build limit."""
        if ":" in reference:  # tags cannot hold a colon; digests always do
            validate_repository(repository)
            return self.manifest_by_digest(reference)
        request = parse_image_name(repository, self.max_packages)
        validate_tag(reference)
        try:
            revision = self.source.resolve(reference)
        except SourceError as error:
            raise errors.unavailable(str(error), retry_after=30) from error
        if revision is None:
            raise errors.manifest_unknown(
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
                    record = self._build(key, request, revision, pinned)
            self.cache.put_image(record)
        self._remember_repository(repository)
        digest = record.docker_digest if prefers_docker(accept) else record.oci_digest
        manifest = self._stored_manifest(digest)
        if manifest is None:
            raise errors.manifest_unknown(digest, {"reason": "index lost the manifest"})
        return manifest

    def _stored_manifest(self, digest: str) -> StoredManifest | None:
        manifest = self.cache.manifest(digest)
        if manifest is None:
            manifest = self.index.get_manifest(digest)
            if manifest is not None:
                self.cache.put_manifest(manifest)
        return manifest

    def _build(
        self, key: str, request: ImageRequest, revision: Revision, pinned: bool
    ) -> ImageRecord:
        """`pinned`: the client named the commit, so a source that lacks it is the client's miss."""
        missing_before = self._not_found.get(key)
        if missing_before is not None:
            raise errors.packages_unknown(missing_before)
        try:
            return self.builder.build(key, request, revision)
        except PackagesNotFound as missing:
            self._not_found.put(key, missing.names)
            raise errors.packages_unknown(missing.names) from None
        except SourceUnavailable as error:
            if pinned:
                raise errors.manifest_unknown(
                    f"{request.repository}:{revision.commit}",
                    {
                        "tag": revision.commit,
                        "reason": "the package source has no such commit, or cannot be fetched",
                        "log": error.log_tail,
                    },
                ) from None
            raise errors.unavailable(str(error), retry_after=30) from None
        except NixTimeout as error:
            raise errors.build_failed(
                f"Nix timed out building {request.repository}", error.log_tail
            ) from None
        except NixError as error:
            raise errors.build_failed(
                f"Nix failed building {request.repository}", error.log_tail
            ) from None
        except SourceError as error:
            raise errors.unavailable(str(error), retry_after=30) from error

    def _remember_repository(self, repository: str) -> None:
        if self._catalogued.get(repository) is None:
            self.index.add_repository(repository)
            self._catalogued.put(repository, True)

    def manifest_by_digest(self, digest: str) -> StoredManifest:
        if not DIGEST_RE.fullmatch(digest):
            raise errors.digest_invalid(digest)
        manifest = self._stored_manifest(digest)
        if manifest is None:
            raise errors.manifest_unknown(digest)
        return manifest

    def blob(self, repository: str, digest: str) -> BlobRecord:
        validate_repository(repository)
        if not DIGEST_RE.fullmatch(digest):
            raise errors.digest_invalid(digest)
        record = self.index.get_blob(digest)
        if record is None:
            raise errors.blob_unknown(digest)
        return record

    def tags(self, repository: str) -> list[str]:
        """The tags the source resolves (the same for every name), never what clients typed."""
        parse_image_name(repository, self.max_packages)
        try:
            return self.source.tags()
        except SourceError as error:
            raise errors.unavailable(str(error), retry_after=30) from error

    def catalog(self, last: str, count: int | None) -> tuple[list[str], bool]:
        """One page of the image names served so far, after `last`, and whether more follow.
        `count` (the client's `n`) is capped at CATALOG_MAX_PAGE."""
        limit = CATALOG_DEFAULT_PAGE if count is None else min(count, CATALOG_MAX_PAGE)
        if limit <= 0:
            return [], False
        names = self.index.list_repositories(last, limit + 1)
        return names[:limit], len(names) > limit
