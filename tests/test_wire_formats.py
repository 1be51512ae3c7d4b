"""Error bodies, manifests and configs: one serialiser each, stable bytes."""

from __future__ import annotations

import json

import pytest

from nixery import errors
from nixery.build.contract import (
    AMD64,
    BuilderUnavailable,
    BuildFailed,
    BuildOutcome,
    BuildRequest,
    BuildTimedOut,
    ImageRequest,
    NixSource,
    NixTooOld,
    PackagePolicy,
    PackagesNotFound,
    PackagesRefused,
    Refusal,
    Revision,
    SourceUnavailable,
    image_key,
)
from nixery.build.imageroot import CA_BUNDLE
from nixery.build.manifest import (
    Descriptor,
    HistoryEntry,
    ImageConfig,
    ImageManifest,
)
from nixery.oci import DOCKER_MANIFEST, OCI_MANIFEST, sha256_digest
from nixery.registry.errormap import as_registry_error
from nixery.registry.service import remembered_failure


def test_error_body_shape() -> None:
    error = as_registry_error(PackagesNotFound(["nope", "nada"]))
    assert error.status == 404
    body = json.loads(error.body())
    assert body == {
        "errors": [
            {
                "code": "MANIFEST_UNKNOWN",
                "message": "refused packages: nope (not found), nada (not found)",
                "detail": {
                    "packages": ["nope", "nada"],
                    "refusals": [
                        {"name": "nope", "reason": "not_found"},
                        {"name": "nada", "reason": "not_found"},
                    ],
                },
            }
        ]
    }


def test_the_status_line_carries_the_message_as_one_ascii_line() -> None:
    error = as_registry_error(PackagesNotFound(["nope"]))
    assert error.status_line() == "404 refused packages: nope (not found)"
    assert errors.reason_phrase("first\nsecond\r\n\tthird") == "first second third"
    assert errors.reason_phrase("caf\u00e9 \u2018quoted\u2019 \x00\x7f") == "caf? ?quoted? ??"
    assert errors.reason_phrase(" \n ") == "error"
    long = "Nix failed: " + "x" * 2000 + " (build log: http://host/builds/0123)"
    phrase = errors.reason_phrase(long)
    assert len(phrase) == errors.MAX_REASON_CHARS
    assert phrase.startswith("Nix failed: xxx") and phrase.endswith(
        "(build log: http://host/builds/0123)"
    )
    assert " ... " in phrase


REFUSALS = [
    Refusal("terraform", "unfree", licence="bsl11", package="terraform-1.9.0"),
    Refusal(
        "openssl_1_1",
        "insecure",
        advisories=("OpenSSL 1.1 is end of life", "CVE-2023-5678"),
        package="openssl-1.1.1w",
    ),
    Refusal("markedbroken", "broken", package="marked-broken-1.0"),
    Refusal("darwinonly", "unsupported_platform", platform="x86_64-linux"),
    Refusal("oldhello", "removed", "'oldHello' has been renamed to/replaced by 'hello'"),
    Refusal("failing.aborts", "evaluation_error", "evaluation aborted: 'x'\nsecond line"),
    Refusal("foo", "not_found"),
]


def test_refusals_are_one_4xx_line_with_the_reasons_in_detail() -> None:
    error = as_registry_error(PackagesRefused(REFUSALS))
    assert (error.code, error.status) == ("MANIFEST_UNKNOWN", 404)
    assert "\n" not in error.message
    assert error.message == (
        "refused packages: "
        "terraform (unfree licence bsl11; set NIXERY_ALLOW_UNFREE=true), "
        "openssl_1_1 (insecure: OpenSSL 1.1 is end of life; CVE-2023-5678; "
        "permit with NIXERY_PERMITTED_INSECURE=openssl-1.1.1w), "
        "markedbroken (marked broken), "
        "darwinonly (not available on x86_64-linux), "
        "oldhello (removed: 'oldHello' has been renamed to/replaced by 'hello'), "
        "failing.aborts (evaluation error: evaluation aborted: 'x'), "
        "foo (not found)"
    )
    assert error.detail["refusals"][1] == {
        "name": "openssl_1_1",
        "reason": "insecure",
        "advisories": ["OpenSSL 1.1 is end of life", "CVE-2023-5678"],
        "package": "openssl-1.1.1w",
    }
    assert [Refusal.from_dict(item) for item in error.detail["refusals"]] == REFUSALS


def test_refusals_travel_between_builder_and_function() -> None:
    sent = BuildOutcome.of_error(PackagesRefused(REFUSALS))
    received = BuildOutcome.from_json(sent.to_json())
    assert received == sent
    assert received.not_found == tuple(refusal.name for refusal in REFUSALS), "for old readers"
    with pytest.raises(PackagesRefused) as raised:
        received.result()
    assert raised.value.refusals == REFUSALS
    # An answer from a builder that predates reasons: every name is "not found".
    old = BuildOutcome.from_json(b'{"outcome":"not_found","not_found":["a"]}')
    with pytest.raises(PackagesRefused) as raised:
        old.result()
    assert raised.value.refusals == [Refusal("a", "not_found")]
    with pytest.raises(ValueError, match="unknown refusal reason"):
        BuildOutcome.from_json(b'{"outcome":"not_found","refusals":[{"name":"a","reason":"x"}]}')


def test_a_too_old_nix_is_the_registry_misconfigured_not_a_failed_build() -> None:
    error = as_registry_error(NixTooOld("/src/nixpkgs", "2.18", "2.8.0"))
    assert (error.code, error.status) == ("UNAVAILABLE", 503)
    assert error.message.startswith("registry misconfigured: ")
    for needed in ("Nix >= 2.18", "Nix 2.8.0", "newer Nix", "NIXERY_CHANNEL", "/src/nixpkgs"):
        assert needed in error.message
    assert error.detail == {"source": "/src/nixpkgs", "required": "2.18", "running": "2.8.0"}
    assert "failed" not in error.message


def test_the_policy_is_in_the_image_key_only_when_it_allows_something() -> None:
    revision = Revision("path:/p", "0" * 40, NixSource("path", "/p"))
    plain = ImageRequest("shell/hello", ("cacert", "hello"), AMD64)
    # The key of a default-policy image, as it was before policies: pinned.
    assert image_key(revision, plain) == image_key(
        revision, ImageRequest("shell/hello", ("cacert", "hello"), AMD64, PackagePolicy())
    )
    assert image_key(revision, plain) == _key_before_policies(revision, plain)
    unfree = ImageRequest("shell/hello", plain.packages, AMD64, PackagePolicy(allow_unfree=True))
    insecure = ImageRequest("shell/hello", plain.packages, AMD64, PackagePolicy(False, ("a-1",)))
    keys = {image_key(revision, request) for request in (plain, unfree, insecure)}
    assert len(keys) == 3


def _key_before_policies(revision: Revision, request: ImageRequest) -> str:
    import hashlib

    from nixery.build.contract import BUILDER_FORMAT

    material = {
        "format": BUILDER_FORMAT,
        "source": revision.source_id,
        "commit": revision.commit,
        "system": request.platform.system,
        "packages": list(request.packages),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def test_build_requests_carry_the_policy() -> None:
    revision = Revision("path:/p", "0" * 40, NixSource("path", "/p"))
    policy = PackagePolicy(allow_unfree=True, permitted_insecure=("openssl-1.1.1w",))
    request = ImageRequest("shell/terraform", ("terraform",), AMD64, policy)
    sent = BuildRequest.of(image_key(revision, request), request, revision)
    received = BuildRequest.from_json(sent.to_json())
    assert received == sent and received.image_request() == request
    # A request from a function that predates policies still parses, with the default policy.
    plain = ImageRequest("shell/hello", ("hello",), AMD64)
    old = json.loads(BuildRequest.of(image_key(revision, plain), plain, revision).to_json())
    del old["allow_unfree"], old["permitted_insecure"]
    assert BuildRequest.from_json(json.dumps(old).encode()).image_request() == plain
    tampered = json.loads(sent.to_json())
    tampered["allow_unfree"] = False
    with pytest.raises(ValueError, match="key does not match"):
        BuildRequest.from_json(json.dumps(tampered).encode())


def test_unavailable_carries_retry_after() -> None:
    error = as_registry_error(BuilderUnavailable("builder down", retry_after=7))
    assert error.status == 503 and error.headers == {"Retry-After": "7"}


# What Nix 2.8 (this machine's) and Nix 2.26 (the builder image's) print when a builder fails.
NIX_2_8_FAILURE = """\
building '/nix/store/lw29-broken-1.0.drv'...
broken: error: frobnicator.c:42: expected ';'
error: builder for '/nix/store/lw29-broken-1.0.drv' failed with exit code 1"""
NIX_2_26_FAILURE = """\
error: builder for '/nix/store/lw29-broken-1.0.drv' failed with exit code 1;
       last 3 log lines:
       > broken: error: frobnicator.c:42: expected ';'
       For full logs, run 'nix log /nix/store/lw29-broken-1.0.drv'.
error: 1 dependencies of derivation '/nix/store/x-image.drv' failed to build"""


@pytest.mark.parametrize("log", [NIX_2_8_FAILURE, NIX_2_26_FAILURE])
def test_a_failed_build_is_a_400_with_nix_first_error_line(log: str) -> None:
    """4xx, so docker prints it; the first `error:` line names the derivation that failed."""
    failed = BuildFailed("building packages: `nix-store --realise ...` exited with 1", log, "app")
    error = as_registry_error(failed)
    assert (error.code, error.status, error.headers) == ("MANIFEST_INVALID", 400, {})
    assert error.message == (
        "Nix failed building app: builder for '/nix/store/lw29-broken-1.0.drv' failed with "
        "exit code 1"
    )
    assert error.detail == {"log": log}
    # No `error:` line at all: the build error's own message.
    bare = as_registry_error(BuildFailed("resolve.nix returned list, not an object", "", "app"))
    assert bare.message == "Nix failed building app: resolve.nix returned list, not an object"


def test_only_transient_failures_are_5xx_with_retry_after() -> None:
    timed_out = as_registry_error(BuildTimedOut("building packages: timed out", "", "slow"))
    assert (timed_out.code, timed_out.status) == ("UNAVAILABLE", 503)
    assert timed_out.headers == {"Retry-After": "30"}
    assert timed_out.message == "Nix timed out building slow; try again later"
    too_old = as_registry_error(NixTooOld("/src", "2.18", "2.8.0"))
    assert too_old.status == 503 and int(too_old.headers["Retry-After"]) >= 60
    assert remembered_failure(BuildFailed("x"))
    for transient in (BuildTimedOut("x"), SourceUnavailable("x"), BuilderUnavailable("x")):
        assert not remembered_failure(transient)


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
        PackagesRefused(REFUSALS),
        NixTooOld("/src", "2.18", "2.8.0"),
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
