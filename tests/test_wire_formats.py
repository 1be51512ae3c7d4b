"""Error bodies, manifests and configs: one serialiser each, stable bytes."""

from __future__ import annotations

import json

from nixery import errors
from nixery.build.contract import BuilderUnavailable, PackagesNotFound
from nixery.build.imageroot import CA_BUNDLE
from nixery.build.manifest import (
    Descriptor,
    HistoryEntry,
    ImageConfig,
    ImageManifest,
)
from nixery.oci import DOCKER_MANIFEST, OCI_MANIFEST, sha256_digest
from nixery.registry.errormap import as_registry_error


def test_error_body_shape() -> None:
    error = as_registry_error(PackagesNotFound(["nope", "nada"]))
    assert error.status == 404
    body = json.loads(error.body())
    assert body == {
        "errors": [
            {
                "code": "MANIFEST_UNKNOWN",
                "message": "unknown packages: nope, nada",
                "detail": {"packages": ["nope", "nada"]},
            }
        ]
    }


def test_unavailable_carries_retry_after() -> None:
    error = as_registry_error(BuilderUnavailable("builder down", retry_after=7))
    assert error.status == 503 and error.headers == {"Retry-After": "7"}


def _manifest(docker: bool) -> ImageManifest:
    config = Descriptor("ignored", sha256_digest(b"config"), 6)
    layers = (Descriptor("ignored", sha256_digest(b"layer"), 5),)
    return ImageManifest(docker, config, layers)


def test_manifest_forms_differ_only_in_media_types() -> None:
    oci, docker = _manifest(False).stored(), _manifest(True).stored()
    assert oci.media_type == OCI_MANIFEST and docker.media_type == DOCKER_MANIFEST
    assert oci.digest == sha256_digest(oci.body) and docker.digest != oci.digest
    oci_json, docker_json = json.loads(oci.body), json.loads(docker.body)
    assert oci_json["mediaType"] == OCI_MANIFEST
    assert oci_json["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert (
        docker_json["layers"][0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    )
    assert [layer["digest"] for layer in oci_json["layers"]] == [
        layer["digest"] for layer in docker_json["layers"]
    ]
    assert _manifest(False).stored() == oci, "same input, same bytes"


def test_config_contents() -> None:
    config = ImageConfig(
        architecture="amd64",
        diff_ids=(sha256_digest(b"a"), sha256_digest(b"b")),
        history=(HistoryEntry("nix store paths: /nix/store/x", "1 store paths"),) * 2,
        ca_bundle=CA_BUNDLE,
        has_bash=True,
    )
    body = json.loads(config.to_json())
    assert body["architecture"] == "amd64" and body["os"] == "linux"
    assert body["rootfs"] == {"type": "layers", "diff_ids": list(config.diff_ids)}
    assert body["config"]["Env"] == [
        "PATH=/bin:/usr/bin",
        "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt",
    ]
    assert body["config"]["Cmd"] == ["bash"]
    assert body["created"] == "1970-01-01T00:00:01Z"
    assert len(body["history"]) == 2
    plain = json.loads(ImageConfig("arm64", (), (), ca_bundle=None, has_bash=False).to_json())
    assert plain["config"] == {"Env": ["PATH=/bin:/usr/bin"]}


def test_build_outcomes_travel_between_builder_and_function() -> None:
    from nixery.build.contract import BuildOutcome

    for outcome, status in [("not_found", 404), ("source_unavailable", 502), ("failed", 500)]:
        sent = BuildOutcome(outcome, not_found=("x",), message="m", log="l")  # type: ignore[arg-type]
        assert BuildOutcome.from_json(sent.to_json()) == sent
        assert sent.http_status == status


# The OCI distribution spec's error codes, and those of the distribution project's errcode
# registry that docker clients know (UNKNOWN, UNAVAILABLE).
SPEC_CODES = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 404,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "PAGINATION_NUMBER_INVALID": 400,
    "SIZE_INVALID": 400,
    "TAG_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
    "UNKNOWN": 500,
    "UNAVAILABLE": 503,
}


def test_error_table_declares_each_spec_code_once() -> None:
    codes = [entry.code for entry in errors.CODES]
    assert len(codes) == len(set(codes))
    for entry in errors.CODES:
        assert SPEC_CODES[entry.code] == entry.status, entry
    declared = {
        value.code for value in vars(errors).values() if isinstance(value, errors.ErrorCode)
    }
    assert declared == set(codes), "every ErrorCode constant is listed in CODES"


def test_every_build_error_round_trips_through_the_outcome() -> None:
    import pytest

    from nixery.build.contract import (
        BuilderBusy,
        BuildError,
        BuildFailed,
        BuildOutcome,
        BuildTimedOut,
        SourceUnavailable,
    )

    raised: list[BuildError] = [
        PackagesNotFound(["a", "b"]),
        BuildFailed("nix-build failed", "log line"),
        BuildTimedOut("timed out", "tail"),
        SourceUnavailable("no such commit", "git says"),
        BuilderBusy("still building"),
        BuilderUnavailable("storage down", retry_after=7),
    ]
    for error in raised:
        outcome = BuildOutcome.from_json(BuildOutcome.of_error(error).to_json())
        with pytest.raises(type(error)) as again:
            outcome.result()
        assert type(again.value) is type(error)
        assert again.value.message == error.message and again.value.log_tail == error.log_tail
        assert again.value.retry_after == error.retry_after
        assert as_registry_error(again.value).status == as_registry_error(error).status
    assert BuildOutcome.from_json(BuildOutcome.of_error(raised[0]).to_json()).not_found == (
        "a",
        "b",
    )


def test_the_builders_report_crosses_the_wire() -> None:
    """Phases and layers reach the registry's build record from the Cloud Run builder."""
    from nixery.build.contract import BuildFailed, BuildOutcome, BuildReport
    from nixery.index import ImageRecord, LayerSummary

    report = BuildReport("01a2")
    report.phase("evaluate", 1.5)
    report.phase("realise", 2.0)
    report.layers.append(LayerSummary("sha256:" + "1" * 64, 10, ("/nix/store/a-x",)))
    image = ImageRecord("k", "sha256:" + "2" * 64, "sha256:" + "3" * 64)
    for sent in (
        BuildOutcome.built(image, report),
        BuildOutcome.of_error(BuildFailed("nix failed", "log"), report),
    ):
        received = BuildOutcome.from_json(sent.to_json())
        assert received == sent
        into = BuildReport("01a2")
        received.fill(into)
        assert into.phases == [("evaluate", 1.5), ("realise", 2.0)]
        assert into.layers == report.layers
