"""The registry's read side: references -> manifests and blobs, building what is missing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from nixery.build.contract import (
    AMD64,
    COMMIT_RE,
    Builder,
    BuildError,
    ImageRequest,
    IndexRequest,
    PackagesNotFound,
    Platform,
    Revision,
    SourceUnavailable,
    image_key,
    index_key,
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
from nixery.registry.sources import PackageSource
from nixery.storage import Storage
from nixery.util.lru import Lru

NOT_FOUND_MEMORY = 4096
# Tags already written to the index by this instance (writing again is harmless, only slower).
# Bounded: reordering the packages of a name gives a new repository for the same image.
KNOWN_TAGS_MEMORY = 16384


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
        platforms: tuple[Platform, ...] = (AMD64,),
    ) -> None:
        self.source = source
        self.index = index
        self.storage = storage
        self.builder = builder
        self.max_packages = max_packages
        self.cold_builds = ClientBuildLimit(client_build_limit)
        self.cache = cache if cache is not None else ManifestCache()
        # What a tag is built for; with more than one, a tag answers an image index.
        self.platforms = platforms
        self._known_tags: Lru[tuple[str, str], bool] = Lru(KNOWN_TAGS_MEMORY)
        self._memo_lock = threading.Lock()
        # A package set at one revision never grows the packages it lacked, so "not found" for
        # an image key holds for good; remembered so retries of a typo do not re-run Nix.
        self._not_found: Lru[str, tuple[list[str], dict[str, list[str]]]] = Lru(NOT_FOUND_MEMORY)

    def manifest(
        self, repository: str, reference: str, accept: str | None, client: str = ""
    ) -> StoredManifest:
        """`client` names who asks (identity or address), for the per-client cold-build limit."""
        if ":" in reference:  # tags cannot hold a colon; digests always do
            validate_repository(repository)
            return self.manifest_by_digest(reference)
        request = parse_image_name(repository, self.max_packages)
        validate_tag(reference)
        revision = self.source.resolve(reference)
        if revision is None:
            raise ManifestUnknown(
                f"{repository}:{reference}", {"tag": reference, "reason": "no such revision"}
            )
        pinned = COMMIT_RE.fullmatch(reference) is not None
        # An `arm64/...` name asks for one platform, whatever the setting.
        form = "manifest" if names_platform(repository) else index_form(accept)
        if not names_platform(repository):
            request = replace(request, platform=self.platforms[0])
        if len(self.platforms) > 1 and form != "manifest":
            multi = IndexRequest(request.repository, request.packages, self.platforms)
            key = index_key(revision, multi)
            record = self._record(
                key, client, lambda: self._build_index(key, multi, revision, pinned)
            )
            docker = form == "docker"
        else:
            # Keyed by the resolved image key, never the raw tag: a moved tag is a new key.
            key = image_key(revision, request)
            record = self._record(key, client, lambda: self._build(key, request, revision, pinned))
            docker = prefers_docker(accept)
        self._remember_tag(repository, reference)
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
                with self.cold_builds.slot(client, key):
                    record = build()
            self.cache.put_image(record)
        return record

    def _build_index(
        self, key: str, request: IndexRequest, revision: Revision, pinned: bool
    ) -> ImageRecord:
        return self._guarded(
            key,
            request.repository,
            revision,
            pinned,
            lambda: self.builder.build_index(key, request, revision),
        )

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
        return self._guarded(
            key,
            request.repository,
            revision,
            pinned,
            lambda: self.builder.build(key, request, revision),
        )

    def _guarded(
        self,
        key: str,
        repository: str,
        revision: Revision,
        pinned: bool,
        build: Callable[[], ImageRecord],
    ) -> ImageRecord:
        """`pinned`: the client named the commit, so a source that lacks it is the client's miss."""
        missing_before = self._not_found.get(key)
        if missing_before is not None:
            raise PackagesNotFound(missing_before[0], repository, by_platform=missing_before[1])
        try:
            return build()
        except SourceUnavailable as error:
            if pinned:
                raise ManifestUnknown(
                    f"{repository}:{revision.commit}",
                    {
                        "tag": revision.commit,
                        "reason": "the package source has no such commit, or cannot be fetched",
                        "log": error.log_tail,
                    },
                ) from None
            error.repository = repository
            raise
        except BuildError as error:
            if isinstance(error, PackagesNotFound):
                self._not_found.put(key, (error.names, error.by_platform))
            error.repository = repository
            raise

    def _remember_tag(self, repository: str, tag: str) -> None:
        with self._memo_lock:
            if self._known_tags.get((repository, tag)):
                return
            self._known_tags.put((repository, tag), True)
        self.index.add_tag(repository, tag)

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
        parse_image_name(repository, self.max_packages)
        return sorted({"latest", *self.index.list_tags(repository)})
