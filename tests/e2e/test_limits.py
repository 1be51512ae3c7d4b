"""Limits against the real server: header and request-line sizes, packages per image, and cold
builds per client, each a JSON error."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from tests.conftest import TEST_PKGS
from tests.e2e.registry_process import RegistryProcess


def raw_get(
    registry: RegistryProcess,
    path: str,
    headers: dict[str, str] | None = None,
    source: str = "127.0.0.1",
) -> tuple[int, dict[str, str], dict[str, Any]]:
    connection = http.client.HTTPConnection(
        "127.0.0.1", registry.port, timeout=600, source_address=(source, 0)
    )
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        if response.status < 400:
            return response.status, dict(response.getheaders()), {}
        assert response.getheader("Content-Type") == "application/json", body
        return response.status, dict(response.getheaders()), json.loads(body)
    finally:
        connection.close()


def test_one_oversized_header_is_a_json_431(registry: RegistryProcess) -> None:
    # Over the one-field limit (the server's total is far above it): still JSON.
    status, _, body = raw_get(registry, "/v2/", {"X-Padding": "a" * 9000})
    assert status == 431
    assert body["errors"][0]["code"] == "UNSUPPORTED"


def test_many_headers_over_the_total_are_a_json_431(registry: RegistryProcess) -> None:
    headers = {f"X-Padding-{index}": "a" * 6000 for index in range(3)}
    status, _, body = raw_get(registry, "/v2/", headers)
    assert status == 431
    assert body["errors"][0]["detail"]["limit"] == 16384


def test_overlong_request_line_is_a_json_414(registry: RegistryProcess) -> None:
    status, _, body = raw_get(registry, "/v2/" + "a/" * 2500 + "manifests/latest")
    assert status == 414
    assert body["errors"][0]["code"] == "NAME_INVALID"


def test_long_path_under_gunicorns_limit_is_a_json_414(registry: RegistryProcess) -> None:
    status, _, body = raw_get(registry, "/v2/" + "a/" * 1200 + "manifests/latest")
    assert status == 414
    assert body["errors"][0]["detail"]["limit"] == 2048


def test_a_tls_handshake_gets_a_plain_http_answer_at_once(registry: RegistryProcess) -> None:
    # docker and podman try HTTPS first and fall back to plain HTTP only on an HTTP answer; a
    # server that waited for a request line would hold them for its read timeout each time.
    client_hello_start = bytes.fromhex("16030100c4010000c00303") + bytes(32)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", registry.port), timeout=5) as connection:
        connection.sendall(client_hello_start)
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
    assert time.monotonic() - started < 3
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"


def test_too_many_packages_never_reach_nix(registry: RegistryProcess) -> None:
    calls = len(registry.nix_calls())
    name = "/".join(f"p{index}" for index in range(65))
    status, _, body = raw_get(registry, f"/v2/{name}/manifests/latest")
    assert status == 400
    error = body["errors"][0]
    assert error["code"] == "NAME_INVALID"
    assert error["detail"]["limit"] == 64 and error["detail"]["packages"] == 65
    assert len(registry.nix_calls()) == calls


def _pkgs_with_a_slow_build(directory: Path) -> Path:
    """The test package set plus `sleepy`, a build of its own (no lock shared with other tests)
    that outlasts NIX_TIMEOUT."""
    (directory / "default.nix").write_text(
        f"""args:
let
  pkgs = import {TEST_PKGS} args;
in
pkgs // {{
  sleepy = derivation {{
    name = "sleepy-{uuid.uuid4().hex[:12]}";
    system = pkgs.busybox.system;
    builder = "${{pkgs.busybox}}/bin/sh";
    PATH = "${{pkgs.busybox}}/bin";
    args = [ "-c" "sleep 600; mkdir $out" ];
  }};
}}
"""
    )
    return directory


def test_cold_builds_per_client(tmp_path: Path) -> None:
    env = {
        "NIXERY_PKGS_PATH": str(_pkgs_with_a_slow_build(tmp_path)),
        "NIXERY_CLIENT_BUILD_LIMIT": "1",
        "NIX_TIMEOUT": "20",
    }
    with RegistryProcess(tmp_path / "storage", env) as registry:
        slow: dict[int, int] = {}

        def build_slow(attempt: int) -> None:
            slow[attempt] = raw_get(registry, "/v2/sleepy/manifests/latest")[0]

        first = threading.Thread(target=build_slow, args=(1,))
        same = threading.Thread(target=build_slow, args=(2,))
        first.start()
        try:
            while not [call for call in registry.nix_calls() if "nix-store --realise" in call]:
                assert first.is_alive(), slow
                time.sleep(0.1)
            # Asking again for the image it waits for shares the client's slot.
            same.start()
            # A second image is one too many for this client; not for another client.
            status, headers, body = raw_get(registry, "/v2/emptydir/manifests/latest")
            assert status == 429
            assert body["errors"][0]["code"] == "TOOMANYREQUESTS"
            assert int(headers["Retry-After"]) > 0
            other, _, _ = raw_get(registry, "/v2/emptydir/manifests/latest", source="127.0.0.2")
            assert other == 200
            warm, _, _ = raw_get(registry, "/v2/emptydir/manifests/latest")
            assert warm == 200
        finally:
            # Whatever happened, NIX_TIMEOUT ends the build before the registry stops.
            first.join()
            if same.is_alive():
                same.join()
        # NIX_TIMEOUT ends the build: a timeout is transient, 503 with Retry-After.
        assert slow == {1: 503, 2: 503}
        again = requests.get(f"{registry.url}/v2/hello/manifests/latest", timeout=600)
        assert again.status_code == 200
