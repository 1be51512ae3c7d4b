"""A bandwidth-limited link on loopback: a TCP proxy on 127.0.0.1 whose connections share one
rate limit, as the connections of a client share its network link.

On loopback a registry answers at memory speed, so a pull's wall time is all client overhead;
users pull over a network. `ThrottledLink(upstream_port, bits_per_second)` listens on a free
port and forwards every connection to `127.0.0.1:upstream_port`; the bytes flowing back to the
client (blobs, manifests: what a pull downloads) pass one shared token bucket, so parallel layer
downloads split the rate between them instead of each getting it whole. Requests from the
client are forwarded unthrottled (they are a few hundred bytes). No added latency: the stated
rate is the only difference from loopback.

It runs its own asyncio loop in a daemon thread, for as long as the `with` block.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from types import TracebackType

from nixery.cloud.devstack import free_port

# How far ahead of the rate a sender may run: one read's worth, so bursts stay small.
READ_BYTES = 16 * 1024


class _SharedRate:
    """A token bucket shared by every connection: the link's clock advances by the time each
    chunk takes at the rate, and a sender waits until the clock reaches its chunk's end."""

    def __init__(self, bytes_per_second: float) -> None:
        self.bytes_per_second = bytes_per_second
        self._link_free_at = time.monotonic()

    async def transmit(self, byte_count: int) -> None:
        now = time.monotonic()
        start = max(now, self._link_free_at)
        self._link_free_at = start + byte_count / self.bytes_per_second
        delay = self._link_free_at - now
        if delay > 0:
            await asyncio.sleep(delay)


class ThrottledLink:
    def __init__(self, upstream_port: int, bits_per_second: float) -> None:
        self.upstream_port = upstream_port
        self.bits_per_second = bits_per_second
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._rate = _SharedRate(bits_per_second / 8)

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> ThrottledLink:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connect, "127.0.0.1", self.port), self._loop
        ).result(timeout=10)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        server = self._server
        if server is not None:

            async def close() -> None:
                server.close()
                for task in asyncio.all_tasks():
                    if task is not asyncio.current_task():
                        task.cancel()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _connect(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_out.close()
            return
        await asyncio.gather(
            self._pipe(client_in, server_out, throttled=False),
            self._pipe(server_in, client_out, throttled=True),
            return_exceptions=True,
        )

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, throttled: bool
    ) -> None:
        try:
            while chunk := await source.read(READ_BYTES):
                if throttled:
                    await self._rate.transmit(len(chunk))
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()


@contextlib.contextmanager
def link(upstream_port: int, bits_per_second: float | None) -> Iterator[str]:
    """The host:port a client reaches `127.0.0.1:upstream_port` by: directly (None), or through
    a `ThrottledLink` at the rate."""
    if bits_per_second is None:
        yield f"127.0.0.1:{upstream_port}"
        return
    with ThrottledLink(upstream_port, bits_per_second) as throttled:
        yield throttled.host_port
