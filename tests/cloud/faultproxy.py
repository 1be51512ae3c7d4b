"""A TCP proxy in front of the GCS emulator that drops the requests a test chooses."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class FaultyProxy:
    """Forwards TCP connections to the emulator; `cut(request_line)` chooses which to drop.

    The emulator answers with HTTP/1.0 and closes every connection, so each connection carries
    one request and the first line identifies it.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cut: Callable[[str], bool] = lambda request_line: False
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
        with client:
            head = b""
            while b"\r\n" not in head:
                data = client.recv(65536)
                if not data:
                    return
                head += data
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
            with socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
                upstream.sendall(head)
                pump = threading.Thread(target=_pipe, args=(client, upstream), daemon=True)
                pump.start()
                _pipe(upstream, client)
                pump.join(timeout=30)


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
