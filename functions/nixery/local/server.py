"""Serve the WSGI app with waitress: one event loop reads and parses every request, a thread pool
runs the application only on complete requests, and responses drain from the loop.

Why waitress rather than gunicorn's gthread worker: gthread hands a connection to a worker thread
as soon as its first byte arrives, and that thread then reads the headers with no time limit, so
a few clients that trickle headers hold every thread. Here a slow client costs one socket and a
buffer in the loop, never a thread; a request not complete within REQUEST_READ_SECONDS is closed.
Blob bodies are sent by the loop too (waitress's file wrapper), so slow downloads hold no thread.
Threads are cheap while they only wait (for a build slot or Nix), so the pool is much larger than
the build concurrency, and the service caps how many of them may wait for cold builds so that
warm pulls always find one (nixery.registry.limits).

Shutdown (SIGTERM, SIGINT): stop accepting, stop the running Nix builds (their waiting clients
are answered 503 + Retry-After by the application), let the loop send what was answered, and
exit within SHUTDOWN_GRACE_SECONDS.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from waitress import server as waitress_server
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from nixery import errors
from nixery.errors import ERROR_CONTENT_TYPE, RegistryError
from nixery.registry.api import API_VERSION_HEADER, MAX_HEADER_BYTES

log = logging.getLogger(__name__)

# The whole request (line, headers, and a body if any) must arrive within this; a client that
# trickles bytes is closed, however steadily it trickles.
REQUEST_READ_SECONDS = 10.0
# An idle keep-alive connection is closed after this.
IDLE_CONNECTION_SECONDS = 30.0
# Open connections at once (idle, reading or answered); past it the loop stops accepting until
# some close. poll() (not select()) so that file descriptors above 1024 work.
CONNECTION_LIMIT = 1024
# waitress's own total header limit, checked before the application sees a request; the
# application's tighter total (MAX_HEADER_BYTES) answers most oversized requests itself.
SERVER_HEADER_LIMIT = 2 * MAX_HEADER_BYTES
# How often the loop looks for connections past their read or idle time.
MAINTENANCE_SECONDS = 1.0
SHUTDOWN_GRACE_SECONDS = 10.0


def parse_error(code: int, reason: str) -> RegistryError:
    """The registry's error for a request waitress could not parse."""
    if code == 431:
        return RegistryError(errors.UNSUPPORTED, "request headers too large", reason, status=431)
    if code == 413:
        return RegistryError(errors.UNSUPPORTED, "request body too large", reason, status=413)
    return RegistryError(errors.UNSUPPORTED, "malformed HTTP request", reason, status=400)


class JsonErrorTask(ErrorTask):  # type: ignore[misc]
    """waitress's answer to a request it rejects, in the registry's JSON form instead of text, so
    clients see the same errors everywhere."""

    def execute(self) -> None:
        rejected = self.request.error
        error = parse_error(int(rejected.code), str(rejected.body))
        body = error.body()
        self.status = f"{error.status} {rejected.reason}"
        self.response_headers.extend(
            [("Content-Type", ERROR_CONTENT_TYPE), *API_VERSION_HEADER.items()]
        )
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


# A TLS record of type handshake (22) from TLS 1.x: no HTTP request starts with these bytes.
TLS_HANDSHAKE_RECORD = b"\x16\x03"


class RegistryChannel(HTTPChannel):  # type: ignore[misc]
    """A connection that remembers when its current request began arriving."""

    error_task_class = JsonErrorTask
    reading_since: float | None = None

    def received(self, data: bytes) -> bool:
        if self.request is None and not self.requests and data.startswith(TLS_HANDSHAKE_RECORD):
            # A TLS ClientHello on this plain-HTTP port (docker and podman try HTTPS first):
            # answered at once in HTTP, which is what makes them fall back to plain HTTP, instead
            # of waiting out the request-read timeout for a request line that never comes.
            self._refuse_tls()
            return False
        if self.request is None and data:
            self.reading_since = time.monotonic()
        result: bool = super().received(data)
        if self.request is None:
            self.reading_since = None
        return result

    def _refuse_tls(self) -> None:
        error = parse_error(400, "a TLS handshake on a plain-HTTP registry port")
        body = error.body()
        head = (
            f"HTTP/1.1 400 Bad Request\r\nContent-Type: {ERROR_CONTENT_TYPE}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.write_soon(head.encode() + body)
        self.close_when_flushed = True


class RegistryWsgiServer(waitress_server.TcpWSGIServer):  # type: ignore[misc]
    channel_class = RegistryChannel
    draining_until: float | None = None

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        too_slow = time.monotonic() - REQUEST_READ_SECONDS
        for channel in list(self.active_channels.values()):
            since = getattr(channel, "reading_since", None)
            if since is not None and since < too_slow and not channel.requests:
                log.warning("closing a connection from %s: request not read in time", channel.addr)
                channel.will_close = True

    def readable(self) -> bool:
        if self.draining_until is not None and self._drained():
            # Leaves the loop; run() shuts the thread pool down.
            raise SystemExit(0)
        return bool(super().readable())

    def _drained(self) -> bool:
        if time.monotonic() >= (self.draining_until or 0):
            log.warning("shutdown grace period over: exiting with requests still open")
            return True
        dispatcher = self.task_dispatcher
        busy = dispatcher.active_count or dispatcher.queue
        unsent = any(
            channel.requests or channel.total_outbufs_len
            for channel in self.active_channels.values()
        )
        return not busy and not unsent


class RegistryServer:
    """The registry's HTTP server. `stop_builds` is called once on SIGTERM/SIGINT: it must end
    the running builds without blocking (their requests then answer 503)."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        threads: int,
        stop_builds: Callable[[], None] = lambda: None,
    ) -> None:
        self._stop_builds = stop_builds
        self.server = RegistryWsgiServer(
            app,
            host=host,
            port=port,
            threads=threads,
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=IDLE_CONNECTION_SECONDS,
            cleanup_interval=MAINTENANCE_SECONDS,
            max_request_header_size=SERVER_HEADER_LIMIT,
            # A read-only registry takes no bodies worth the name.
            max_request_body_size=1024 * 1024,
            asyncore_use_poll=True,
            ident="nixery",
            # Tracebacks go to the log, never to a client.
            expose_tracebacks=False,
        )

    @property
    def port(self) -> int:
        return int(self.server.effective_port)

    def begin_shutdown(self, signum: int, frame: FrameType | None = None) -> None:
        if self.server.draining_until is not None:
            return
        log.info("signal %d: stopping builds and draining requests", signum)
        self.server.draining_until = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        # No new connections; the open ones get their answers.
        self.server.accepting = False
        self._stop_builds()
        # Wake the loop so that it notices promptly.
        self.server.pull_trigger()

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.begin_shutdown)
        self.server.run()
        self.server.close()
