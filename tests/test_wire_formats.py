"""Error bodies, manifests and configs: one serialiser each, stable bytes."""

from __future__ import annotations

import json

from nixery import errors
from nixery.build.manifest import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    Descriptor,
    HistoryEntry,
    ImageConfig,
    ImageManifest,
)
from nixery.oci import sha256_digest


def test_error_body_shape() -> None:
    error = errors.packages_unknown(["nope", "nada"])
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
    error = errors.unavailable("builder down", retry_after=7)
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
        has_ca_bundle=True,
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
    plain = json.loads(ImageConfig("arm64", (), (), has_ca_bundle=False, has_bash=False).to_json())
    assert plain["config"] == {"Env": ["PATH=/bin:/usr/bin"]}


def test_build_outcomes_travel_between_builder_and_function() -> None:
    from nixery.cloud.remote import BuildOutcome

    for outcome, status in [("not_found", 404), ("source_unavailable", 502), ("failed", 500)]:
        sent = BuildOutcome(outcome, not_found=("x",), message="m", log="l")  # type: ignore[arg-type]
        assert BuildOutcome.from_json(sent.to_json()) == sent
        assert sent.http_status == status
