"""The registry's read side: references -> manifests and blobs, building what is missing."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from nixery.build.contract import (
    COMMIT_RE,
    DEFAULT_POLICY,
    Builder,
    BuildError,
    ImageRequest,
    NixTooOld,
    PackagePolicy,
    PackagesRefused,
    Refusal,
    Revision,
    SourceUnavailable,
    image_key,
)
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
from nixery.registry.sources import PackageSource
from nixery.storage import Storage
from nixery.util.lru import Lru

NOT_FOUND_MEMORY = 4096
MISCONFIGURED_MEMORY = 256


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
        client_build_limit: int = 2,
        cache: ManifestCache | None = None,
        policy: PackagePolicy = DEFAULT_POLICY,
    ) -> None:
        self.source = source
        self.index = index
        self.storage = storage
        self.builder = builder
        self.max_packages = max_packages
        self.policy = policy
        self.cold_builds = ClientBuildLimit(client_build_limit)
        self.cache = cache if cache is not None else ManifestCache()
        self._known_tags: set[tuple[str, str]] = set()
        self._memo_lock = threading.Lock()
        # A package set at one revision, under one policy (both in the image key), refuses the
        # same names for the same reasons for good ("not found", unfree, an abort...);
        # remembered so retries of a typo do not re-run Nix.
        self._refused: Lru[str, list[Refusal]] = Lru(NOT_FOUND_MEMORY)
        # A revision that needs a newer Nix than the builder's needs it for every image.
        self._nix_too_old: Lru[tuple[str, str], NixTooOld] = Lru(MISCONFIGURED_MEMORY)

    def manifest(
        self, repository: str, reference: str, accept: str | None, client: str = ""
    ) -> StoredManifest:
        """`client` names who asks (identity or address), for the per-client cold-build limit."""
        if ":" in reference:  # tags cannot hold a colon; digests always do
            validate_repository(repository)
            return self.manifest_by_digest(reference)
        request = dataclasses.replace(
            parse_image_name(repository, self.max_packages), policy=self.policy
        )
        validate_tag(reference)
        revision = self.source.resolve(reference)
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
                    record = self._build(key, request, revision, pinned)
            self.cache.put_image(record)
        self._remember_tag(repository, reference)
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

    def _build(
        self, key: str, request: ImageRequest, revision: Revision, pinned: bool
    ) -> ImageRecord:
        """`pinned`: the client named the commit, so a source that lacks it is the client's miss."""
        refused_before = self._refused.get(key)
        if refused_before is not None:
            raise PackagesRefused(refused_before, request.repository)
        revision_key = (revision.source_id, revision.commit)
        too_old = self._nix_too_old.get(revision_key)
        if too_old is not None:
            raise NixTooOld(too_old.source, too_old.required, too_old.running, request.repository)
        try:
            return self.builder.build(key, request, revision)
        except SourceUnavailable as error:
            if pinned:
                raise ManifestUnknown(
                    f"{request.repository}:{revision.commit}",
                    {
                        "tag": revision.commit,
                        "reason": "the package source has no such commit, or cannot be fetched",
                        "log": error.log_tail,
                    },
                ) from None
            error.repository = request.repository
            raise
        except BuildError as error:
            if isinstance(error, PackagesRefused):
                self._refused.put(key, error.refusals)
            if isinstance(error, NixTooOld):
                self._nix_too_old.put(revision_key, error)
            error.repository = request.repository
            raise

    def _remember_tag(self, repository: str, tag: str) -> None:
        with self._memo_lock:
            if (repository, tag) in self._known_tags:
                return
            self._known_tags.add((repository, tag))
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
