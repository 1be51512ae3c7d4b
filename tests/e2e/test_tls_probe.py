"""A client that tries HTTPS first is turned away at once: docker 20.10 probes `https://` before
`http://` for an insecure registry and waited for its 10 s TLS handshake timeout on every pull
while the server waited for an HTTP request that never came."""

from __future__ import annotations

import socket
import ssl
import time

import requests

from tests.e2e.registry_process import RegistryProcess


def test_a_tls_client_hello_is_answered_by_closing_the_connection(
    registry: RegistryProcess,
) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    host, port = registry.url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=host):
                raise AssertionError("a TLS handshake with a plain-HTTP registry succeeded")
        except (ssl.SSLError, ConnectionError, OSError) as refused:
            assert not isinstance(refused, TimeoutError), "the server let the handshake hang"
    assert time.monotonic() - started < 2.0
    # Plain HTTP on the same server is unaffected.
    assert requests.get(f"{registry.url}/v2/", timeout=10).status_code == 200
