"""A TCP proxy in front of the GCS emulator that drops the requests a test chooses."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

MAX_HEAD_BYTES = 1024 * 1024


class ConnectionEnded(Exception):
    """The client closed its side of the connection."""


class _Stream:
    """Buffered reads from the client's socket: whole lines, exact byte counts."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def _fill(self) -> None:
        data = self._sock.recv(65536)
        if not data:
            raise ConnectionEnded
        self._buffer += data

    def until(self, marker: bytes) -> bytes:
        """Everything up to and including `marker`."""
        while marker not in self._buffer:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise ConnectionEnded
            self._fill()
        end = self._buffer.index(marker) + len(marker)
        taken, self._buffer = self._buffer[:end], self._buffer[end:]
        return taken

    def exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        taken, self._buffer = self._buffer[:count], self._buffer[count:]
        return taken


class FaultyProxy:
    """Forwards TCP connections to the emulator; `cut(request_line)` chooses which to drop.

    The emulator (fake-gcs-server) keeps connections alive, so one connection carries many
    requests: the proxy reads the client's side request by request (head, then the body by its
    Content-Length or chunked framing) and decides for each one. Responses flow back unparsed;
    the storage client does not pipeline, so each response follows its request.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cut: Callable[[str], bool] = lambda request_line: False
        # A whole HTTP response to send instead of forwarding the request (None: forward it).
        self.answer: Callable[[str], bytes | None] = lambda request_line: None
        self.requests: list[str] = []
        self.dropped: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        stream = _Stream(client)
        upstream: socket.socket | None = None
        pump: threading.Thread | None = None
        try:
            while True:
                try:
                    head = stream.until(b"\r\n\r\n")
                except ConnectionEnded:
                    return
                request_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
                with self._lock:
                    self.requests.append(request_line)
                    drop = self.cut(request_line)
                    if drop:
                        self.dropped.append(request_line)
                if drop:
                    # Part of the request reaches nobody: the client sees the connection reset.
                    client.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    return
                canned = self.answer(request_line)
                if canned is not None:
                    try:
                        _forward_body(stream, _headers(head), None)
                    except ConnectionEnded:
                        return
                    client.sendall(canned)
                    continue
                if upstream is None:
                    upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
                    pump = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
                    pump.start()
                upstream.sendall(head)
                try:
                    _forward_body(stream, _headers(head), upstream)
                except ConnectionEnded:
                    return
        except OSError:
            return
        finally:
            # Close the client first (a dropped request's reset must reach it now), and shut the
            # upstream down rather than only closing it: close() does not wake the pump's recv.
            client.close()
            if upstream is not None:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_RDWR)
                if pump is not None:
                    pump.join(timeout=30)
                upstream.close()


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    pairs = (line.partition(":") for line in lines if ":" in line)
    return {name.strip().lower(): value.strip() for name, _, value in pairs}


def _forward_body(stream: _Stream, headers: dict[str, str], upstream: socket.socket | None) -> None:
    """Reads the request's body and sends it upstream (or, without one, nowhere)."""
    send = upstream.sendall if upstream is not None else lambda data: None
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = stream.until(b"\r\n")
            send(size_line)
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Trailers, if any, end with an empty line.
                while (line := stream.until(b"\r\n")) != b"\r\n":
                    send(line)
                send(b"\r\n")
                return
            send(stream.exactly(size + 2))
    length = int(headers.get("content-length", "0") or 0)
    remaining = length
    while remaining:
        piece = stream.exactly(min(remaining, 65536))
        send(piece)
        remaining -= len(piece)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def nth_request(marker: str, n: int) -> Callable[[str], bool]:
    seen = 0

    def cut(request_line: str) -> bool:
        nonlocal seen
        if marker not in request_line:
            return False
        seen += 1
        return seen == n

    return cut
