"""Multi-platform tags without Nix: platform names, the index wire forms, the index key,
negotiation, the builder wire form of an index build, and the coordinator building every
platform under one lease (with a recording builder standing in for Nix)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from nixery.build.contract import (
    AMD64,
    ARM64,
    PLATFORMS,
    BuildOutcome,
    BuildReport,
    BuildRequest,
    ImageRequest,
    IndexRequest,
    NixSource,
    PackagesNotFound,
    Revision,
    UnknownPlatform,
    image_key,
    index_key,
    parse_platforms,
)
from nixery.build.coordinator import BuildCoordinator
from nixery.build.manifest import Descriptor, ImageConfig, ImageIndex, IndexEntry
from nixery.config import SUPPORTED_PLATFORMS, ConfigError, load_config
from nixery.index import ImageRecord, StoredManifest
from nixery.index.sqlite import SqliteIndex
from nixery.oci import DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, sha256_digest
from nixery.registry.errormap import as_registry_error
from nixery.registry.names import names_platform
from nixery.registry.negotiation import index_form

REVISION = Revision("path:/pkgs", "f" * 40, NixSource("path", "/pkgs"))


def test_platform_names() -> None:
    assert parse_platforms("linux/amd64, linux/arm64,linux/arm64/v8") == (AMD64, ARM64)
    assert ARM64.spec == "linux/arm64/v8" and AMD64.spec == "linux/amd64"
    with pytest.raises(UnknownPlatform):
        parse_platforms("linux/s390x")
    assert set(SUPPORTED_PLATFORMS) == set(PLATFORMS), "config names what the contract builds"


def test_the_setting_is_checked_at_start_up() -> None:
    assert load_config({}, {}).platforms == "linux/amd64"
    assert load_config({"NIXERY_PLATFORMS": "linux/amd64,linux/arm64"}, {})
    with pytest.raises(ConfigError, match="NIXERY_PLATFORMS"):
        load_config({"NIXERY_PLATFORMS": "linux/amd64,windows/amd64"}, {})


def test_amd64_keys_and_configs_keep_their_bytes() -> None:
    # Pinned: image keys and configs of existing (amd64) images do not move. Format 3 since
    # the default layering became `chunked`, 4 since its budget and order key changed (their
    # layers differ, so their keys must).
    request = ImageRequest("hello", ("cacert", "hello", "iana-etc"), AMD64)
    material = {
        "format": 4,
        "source": REVISION.source_id,
        "commit": REVISION.commit,
        "system": "x86_64-linux",
        "packages": list(request.packages),
    }
    expected = sha256_digest(json.dumps(material, sort_keys=True).encode()).split(":")[1]
    assert image_key(REVISION, request) == expected
    plain = ImageConfig("amd64", (), (), ca_bundle=None, has_bash=False).to_json()
    assert plain.startswith(b'{"architecture":"amd64","os":"linux","created"')
    arm = json.loads(ImageConfig("arm64", (), (), None, False, variant="v8").to_json())
    assert (arm["architecture"], arm["os"], arm["variant"]) == ("arm64", "linux", "v8")


def test_index_forms() -> None:
    manifest = Descriptor(OCI_MANIFEST, sha256_digest(b"m"), 10)
    entries = (
        IndexEntry(manifest, "amd64", "linux", None),
        IndexEntry(manifest, "arm64", "linux", "v8"),
    )
    oci = json.loads(ImageIndex(False, entries, (("a.b", "c"),)).to_json())
    assert oci["mediaType"] == OCI_INDEX and oci["annotations"] == {"a.b": "c"}
    assert oci["manifests"][1]["platform"] == {
        "architecture": "arm64",
        "os": "linux",
        "variant": "v8",
    }
    docker = json.loads(ImageIndex(True, entries, (("a.b", "c"),)).to_json())
    assert docker["mediaType"] == DOCKER_MANIFEST_LIST and "annotations" not in docker
    assert ImageIndex(False, entries).stored() == ImageIndex(False, entries).stored()


def test_index_keys() -> None:
    both = IndexRequest("shell", ("bash",), (AMD64, ARM64))
    assert index_key(REVISION, both) != index_key(
        REVISION, IndexRequest("shell", ("bash",), (ARM64, AMD64))
    )
    assert index_key(REVISION, both) == index_key(
        REVISION, IndexRequest("other/name", ("bash",), (AMD64, ARM64))
    ), "like image keys, the name is not part of the identity"


def test_index_negotiation() -> None:
    assert index_form(None) == "oci"
    assert index_form(f"{OCI_MANIFEST}, {OCI_INDEX}") == "oci"
    assert (
        index_form(f"{DOCKER_MANIFEST_LIST}, application/vnd.docker.distribution.manifest.v2+json")
        == "docker"
    )
    assert index_form(OCI_MANIFEST) == "manifest"
    assert names_platform("arm64/shell") and names_platform("shell/arm64/git")
    assert not names_platform("shell/git/arm64") and not names_platform("hello")


def test_index_builds_travel_to_the_builder() -> None:
    request = IndexRequest("shell", ("bash",), (AMD64, ARM64))
    sent = BuildRequest.of_index(index_key(REVISION, request), request, REVISION)
    received = BuildRequest.from_json(sent.to_json())
    assert received.index_request() == request
    forged = json.loads(sent.to_json())
    forged["platforms"] = ["linux/amd64"]
    with pytest.raises(ValueError, match="key"):
        BuildRequest.from_json(json.dumps(forged).encode())
    refusal = PackagesNotFound(["x"], by_platform={"linux/arm64/v8": ["x"]})
    back = BuildOutcome.from_json(BuildOutcome.of_error(refusal).to_json())
    with pytest.raises(PackagesNotFound) as raised:
        back.result()
    assert raised.value.by_platform == {"linux/arm64/v8": ["x"]}
    detail = as_registry_error(raised.value).detail
    assert detail == {
        "packages": ["x"],
        "refusals": [{"name": "x", "reason": "not_found"}],
        "platforms": {"linux/arm64/v8": ["x"]},
    }


class RecordingBuilder:
    """Writes a tiny manifest per platform; refuses `refused` on arm64."""

    def __init__(self, index: SqliteIndex, refused: set[str]) -> None:
        self.index = index
        self.refused = refused
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def build(
        self,
        key: str,
        request: ImageRequest,
        revision: Revision,
        report: BuildReport | None = None,
    ) -> ImageRecord:
        with self.lock:
            self.calls.append(request.platform.architecture)
        if request.platform == ARM64 and self.refused & set(request.packages):
            raise PackagesNotFound(sorted(self.refused & set(request.packages)))
        digests = []
        for media_type in (OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"):
            body = json.dumps({"mediaType": media_type, "key": key}).encode()
            self.index.put_manifest(StoredManifest(sha256_digest(body), media_type, body))
            digests.append(sha256_digest(body))
        record = ImageRecord(key, digests[0], digests[1])
        self.index.put_image(record)
        return record


def test_the_coordinator_builds_every_platform_once_under_one_lease(tmp_path: Path) -> None:
    index = SqliteIndex(tmp_path / "index.sqlite")
    builder = RecordingBuilder(index, {"x86only"})
    coordinator = BuildCoordinator(builder, index, lease_seconds=30, wait_seconds=30)
    request = IndexRequest("shell", ("bash",), (AMD64, ARM64))
    key = index_key(REVISION, request)
    record = coordinator.build_index(key, request, REVISION)
    assert sorted(builder.calls) == ["amd64", "arm64"]
    assert coordinator.build_index(key, request, REVISION) == record
    assert len(builder.calls) == 2, "the index record is reused"
    # The arm64 image is the one an arm64/ name gets: no second build.
    arm = ImageRequest("arm64/shell", ("bash",), ARM64)
    coordinator.build(image_key(REVISION, arm), arm, REVISION)
    assert len(builder.calls) == 2

    partial = IndexRequest("x86only", ("x86only",), (AMD64, ARM64))
    partial_record = coordinator.build_index(index_key(REVISION, partial), partial, REVISION)
    body = index.get_manifest(partial_record.oci_digest)
    assert body is not None
    assert [m["platform"]["architecture"] for m in json.loads(body.body)["manifests"]] == ["amd64"]
    with pytest.raises(PackagesNotFound) as refused:
        only_arm = IndexRequest("x86only", ("x86only",), (ARM64,))
        coordinator.build_index(index_key(REVISION, only_arm), only_arm, REVISION)
    assert refused.value.by_platform == {"linux/arm64/v8": ["x86only"]}
