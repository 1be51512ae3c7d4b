"""Team access: docker's login flow (401, then Basic) against a local tokeninfo stand-in."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from nixery.auth.access import (
    AccessError,
    GoogleTokens,
    RobotTokens,
    access_from_config,
    fetch_tokeninfo,
    hash_robot_token,
    parse_robot_hashes,
)
from nixery.config import ConfigError, load_config
from nixery.local.assemble import embedded_app
from nixery.registry.errormap import as_registry_error
from tests.team import ROBOT, ROBOT_LINE, ROBOT_TOKEN, basic, google, team_env
from tests.tokeninfo_standin import TokenInfoStandIn, token_answer

ABSENT = "sha256:" + "0" * 64


@pytest.fixture(scope="module")
def team(standin: TokenInfoStandIn, tmp_path_factory: pytest.TempPathFactory) -> FlaskClient:
    storage = tmp_path_factory.mktemp("team") / "storage"
    config = load_config(team_env(standin, storage), {})
    return embedded_app(config).test_client()


def assert_error(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    error = response.get_json()["errors"][0]
    assert error["code"] == code
    return error


def test_base_endpoint_challenges_with_basic(team: FlaskClient) -> None:
    response = team.get("/v2/")
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="nixery"')
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize("token", ["tok-alice", "tok-carol", "tok-frank"])
def test_team_members_log_in(team: FlaskClient, token: str) -> None:
    response = team.get("/v2/", headers={"Authorization": google(token)})
    assert response.status_code == 200
    assert response.get_json() == {}


@pytest.mark.parametrize("username", ["oauth2accesstoken", "_dcgcloud_token", "_token"])
def test_every_google_credential_helper_username_logs_in(team: FlaskClient, username: str) -> None:
    # `docker login -u oauth2accesstoken`; docker-credential-gcloud and -gcr send _dcgcloud_token.
    response = team.get("/v2/", headers={"Authorization": basic(username, "tok-alice")})
    assert response.status_code == 200
    mallory = team.get("/v2/", headers={"Authorization": basic(username, "tok-mallory")})
    assert_error(mallory, 403, "DENIED")


def test_robot_logs_in(team: FlaskClient) -> None:
    assert team.get("/v2/", headers={"Authorization": basic(ROBOT, ROBOT_TOKEN)}).status_code == 200


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (google("tok-expired"), "expired"),
        (google("tok-other-client"), "another client"),
        (google("tok-never-issued"), "rejected"),
        (basic(ROBOT, ROBOT_TOKEN + "x"), "wrong token"),
        (basic("no-such-robot", ROBOT_TOKEN), "wrong token"),
        (basic(ROBOT.upper(), ROBOT_TOKEN), "wrong token"),
        ("Basic !!!not-base64!!!", "malformed"),
        ("Basic " + "bm9jb2xvbg==", "malformed"),  # "nocolon"
        ("Basic " + "Om5vdXNlcg==", "malformed"),  # ":nouser"
        ("Bearer " + ROBOT_TOKEN, "only HTTP Basic"),
        ("Digest username=alice", "only HTTP Basic"),
        ("Basic", "malformed"),
        ("", "no credentials"),
        ("Basic " + "QQ" * 5000, "too long"),
    ],
)
def test_wrong_credentials_are_401(team: FlaskClient, authorization: str, reason: str) -> None:
    response = team.get("/v2/", headers={"Authorization": authorization})
    error = assert_error(response, 401, "UNAUTHORIZED")
    assert reason in error["detail"]["reason"]
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


@pytest.mark.parametrize(
    ("token", "identity"),
    [
        ("tok-mallory", "mallory@example.com"),
        ("tok-bob", "bob@example.net"),
        ("tok-unverified", "dave@example.org"),
        ("tok-hd-elsewhere", "erin@example.org"),
    ],
)
def test_authenticated_outsiders_are_403(team: FlaskClient, token: str, identity: str) -> None:
    response = team.get("/v2/hello/manifests/latest", headers={"Authorization": google(token)})
    error = assert_error(response, 403, "DENIED")
    assert error["detail"]["identity"] == identity


@pytest.mark.parametrize(
    "path",
    [
        "/v2/hello/manifests/latest",
        f"/v2/hello/blobs/{ABSENT}",
        "/v2/hello/tags/list",
        "/v2/_catalog",
        "/v2/_catalog?n=1&last=a",
        "/v2/hello/blobs/uploads/",
        "/nothing/here",
        "/static/anything",
    ],
)
def test_every_endpoint_needs_credentials(team: FlaskClient, path: str) -> None:
    for method in ("GET", "HEAD", "PUT"):
        response = team.open(path, method=method)
        assert response.status_code == 401, (method, path)
        assert "Location" not in response.headers


def test_admitted_requests_reach_the_registry(team: FlaskClient) -> None:
    response = team.get(f"/v2/hello/blobs/{ABSENT}", headers={"Authorization": google("tok-alice")})
    assert_error(response, 404, "BLOB_UNKNOWN")


def test_one_verification_per_token(team: FlaskClient, standin: TokenInfoStandIn) -> None:
    standin.answers["tok-pull"] = token_answer("alice@example.com")
    headers = {"Authorization": google("tok-pull")}
    barrier = threading.Barrier(8)

    def pull() -> None:
        barrier.wait()
        team.application.test_client().get(f"/v2/hello/blobs/{ABSENT}", headers=headers)

    threads = [threading.Thread(target=pull) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(5):
        team.get("/v2/", headers=headers)
    assert standin.calls["tok-pull"] == 1
    # Garbage is remembered too, for a short while: a client retrying it costs one call.
    for _ in range(3):
        team.get("/v2/", headers={"Authorization": google("tok-garbage-retried")})
    assert standin.calls["tok-garbage-retried"] == 1


def test_verdict_cache_is_bounded_and_holds_no_token(standin: TokenInfoStandIn) -> None:
    tokens = GoogleTokens(standin.url, frozenset({"alice@example.com"}), frozenset(), memory=3)
    for index in range(6):
        standin.answers[f"tok-many-{index}"] = token_answer("alice@example.com")
        tokens.verify(f"tok-many-{index}")
    cache = tokens._cache
    assert len(cache) == 3
    assert not any("tok-" in key for key in [*cache.admitted.keys(), *cache.refused.keys()])


def test_refusals_never_push_admissions_out(standin: TokenInfoStandIn) -> None:
    tokens = GoogleTokens(standin.url, frozenset({"alice@example.com"}), frozenset(), memory=2)
    standin.answers["tok-kept"] = token_answer("alice@example.com")
    tokens.verify("tok-kept")
    for index in range(10):  # garbage anyone can send: each is a refusal, remembered for 30 s
        with pytest.raises(AccessError):
            tokens.verify(f"tok-junk-{index}")
    assert tokens.verify("tok-kept").name == "alice@example.com"
    assert standin.calls["tok-kept"] == 1


def test_verdict_expires_with_the_token(standin: TokenInfoStandIn) -> None:
    now = [1_000_000.0]
    answer = token_answer("alice@example.com")
    answer["exp"] = str(int(now[0] + 100))
    tokens = GoogleTokens(
        standin.url,
        frozenset({"alice@example.com"}),
        frozenset(),
        fetch=lambda url, token: fetch_tokeninfo(url, token) and answer,
        clock=lambda: now[0],
    )
    standin.answers["tok-short"] = answer
    assert tokens.verify("tok-short").name == "alice@example.com"
    assert tokens.verify("tok-short").name == "alice@example.com"
    assert standin.calls["tok-short"] == 1
    now[0] += 101
    with pytest.raises(AccessError) as expired:
        tokens.verify("tok-short")
    assert as_registry_error(expired.value).status == 401
    assert standin.calls["tok-short"] == 2


def test_registry_without_robots_refuses_robot_credentials_without_scrypt() -> None:
    robots = RobotTokens({})
    with pytest.raises(AccessError) as refused:
        robots.verify(ROBOT, ROBOT_TOKEN)
    assert as_registry_error(refused.value).status == 401
    assert as_registry_error(refused.value).detail == {
        "reason": "this registry admits no robot tokens"
    }


@pytest.mark.parametrize("expiry", ["nan", "inf", "-inf", ""])
def test_an_answer_without_a_finite_expiry_is_refused(
    standin: TokenInfoStandIn, expiry: str
) -> None:
    answer = token_answer("alice@example.com")
    answer["exp"] = expiry
    standin.answers[f"tok-exp-{expiry}"] = answer
    tokens = GoogleTokens(standin.url, frozenset({"alice@example.com"}), frozenset())
    with pytest.raises(AccessError) as refused:
        tokens.verify(f"tok-exp-{expiry}")
    assert as_registry_error(refused.value).status == 401


def test_a_verifier_answering_garbage_is_503() -> None:
    # A proxy in the way that answers something other than HTTP.
    with socket.create_server(("127.0.0.1", 0)) as server:

        def answer_garbage() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(4096)
                connection.sendall(b"garbage\r\n\r\n")

        threading.Thread(target=answer_garbage, daemon=True).start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/tokeninfo"
        tokens = GoogleTokens(url, frozenset({"a@b.c"}), frozenset())
        with pytest.raises(AccessError) as error:
            tokens.verify("tok-any")
    assert as_registry_error(error.value).status == 503


def test_unreachable_verifier_is_503_not_401(tmp_path: Path) -> None:
    tokens = GoogleTokens("http://127.0.0.1:9/tokeninfo", frozenset({"a@b.c"}), frozenset())
    with pytest.raises(AccessError) as error:
        tokens.verify("tok-any")
    assert as_registry_error(error.value).status == 503
    assert as_registry_error(error.value).code == "UNAVAILABLE"


def test_audience_unchecked_unless_configured(standin: TokenInfoStandIn) -> None:
    tokens = GoogleTokens(standin.url, frozenset({"alice@example.com"}), frozenset())
    assert tokens.verify("tok-other-client").name == "alice@example.com"


def test_robot_hash_lines_round_trip() -> None:
    robots = RobotTokens(parse_robot_hashes(ROBOT_LINE + ",\n" + hash_robot_token("b", "t").line()))
    assert robots.verify(ROBOT, ROBOT_TOKEN).name == ROBOT
    assert robots.verify("b", "t").name == "b"
    assert ROBOT_TOKEN not in ROBOT_LINE
    with pytest.raises(AccessError):
        robots.verify("b", ROBOT_TOKEN)


@pytest.mark.parametrize(
    "raw",
    [
        "ci-bot:sha1$abc",
        "ci-bot",
        ROBOT_LINE + "," + ROBOT_LINE,
        ROBOT_LINE.replace("ci-bot", "oauth2accesstoken"),
        ROBOT_LINE.replace("$16384$", "$1000$"),
        # More memory than scrypt may take: every check would fail.
        ROBOT_LINE.replace("$16384$8$", "$65536$8$"),
        ROBOT_LINE.replace("$16384$8$", "$1048576$1$"),
        # A short salt or hash, or base64 that is not.
        ROBOT_LINE.rsplit("$", 2)[0] + "$AAAA$" + ROBOT_LINE.rsplit("$", 1)[1],
        ROBOT_LINE.rsplit("$", 1)[0] + "$AA",
        ROBOT_LINE.rsplit("$", 1)[0] + "$A",
    ],
)
def test_bad_robot_lines_stop_start_up(raw: str) -> None:
    with pytest.raises(ConfigError):
        parse_robot_hashes(raw)


def test_team_mode_needs_someone_to_admit(tmp_path: Path) -> None:
    env = {"NIXERY_ACCESS": "team", "STORAGE_PATH": str(tmp_path)}
    with pytest.raises(ConfigError, match="NIXERY_TEAM_MEMBERS"):
        access_from_config(load_config(env, {}))
    with pytest.raises(ConfigError, match="NIXERY_ACCESS"):
        load_config({**env, "NIXERY_ACCESS": "private"}, {})


def test_public_mode_ignores_credentials(tmp_path: Path) -> None:
    config = load_config(
        {"NIXERY_PKGS_PATH": os.fspath(tmp_path), "STORAGE_PATH": str(tmp_path)}, {}
    )
    client = embedded_app(config).test_client()
    assert client.get("/v2/").status_code == 200
    assert client.get("/v2/", headers={"Authorization": "Basic !!!"}).status_code == 200


def test_robot_token_command_prints_a_working_line(capsys: pytest.CaptureFixture[str]) -> None:
    from nixery.cli import main

    assert main(["robot-token", "deployer"]) == 0
    line, token = capsys.readouterr().out.splitlines()
    robots = RobotTokens(parse_robot_hashes(line))
    assert robots.verify("deployer", token).kind == "robot"


def test_tokens_that_are_not_url_safe_never_reach_google(standin: TokenInfoStandIn) -> None:
    tokens = GoogleTokens(standin.url, frozenset({"alice@example.com"}), frozenset())
    before = sum(standin.calls.values())
    for token in ("tok alice", "tok-alice&access_token=tok-carol", "tok\nalice", "x" * 5000):
        with pytest.raises(AccessError) as error:
            tokens.verify(token)
        assert as_registry_error(error.value).status == 401
    assert sum(standin.calls.values()) == before


def test_team_settings_are_checked_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nixery.cli import main

    monkeypatch.setenv("STORAGE_PATH", str(tmp_path))
    monkeypatch.setenv("NIXERY_PKGS_PATH", str(tmp_path))
    assert main(["serve", "--access", "team"]) == 2
    assert "NIXERY_TEAM_MEMBERS" in capsys.readouterr().err
    bad_url = ["serve", "--access", "team", "--team-members", "a@b.c"]
    assert main([*bad_url, "--tokeninfo-url", "file:///etc/passwd"]) == 2
    assert "NIXERY_TOKENINFO_URL" in capsys.readouterr().err


def test_the_client_is_the_front_ends_entry_not_the_clients() -> None:
    from flask import Request
    from werkzeug.test import EnvironBuilder

    from nixery.registry.api import client_address

    def request(forwarded: str | None) -> Request:
        headers = [("X-Forwarded-For", forwarded)] if forwarded is not None else []
        builder = EnvironBuilder(headers=headers, environ_base={"REMOTE_ADDR": "10.0.0.9"})
        return Request(builder.get_environ())

    assert client_address(request("203.0.113.7"), forwarded_hops=1) == "203.0.113.7"
    assert client_address(request("1.2.3.4, 203.0.113.7"), forwarded_hops=1) == "203.0.113.7"
    assert client_address(request("1.2.3.4, 203.0.113.7"), forwarded_hops=0) == "10.0.0.9"
    assert client_address(request(None), forwarded_hops=1) == "10.0.0.9"
    assert client_address(request(""), forwarded_hops=1) == "10.0.0.9"
