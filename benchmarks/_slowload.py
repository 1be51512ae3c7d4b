"""Hostile load for the serving benchmarks and e2e tests: connections that trickle headers,
cold builds that take minutes, and warm pulls timed one by one meanwhile."""

from __future__ import annotations

import contextlib
import http.client
import socket
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

# Each trickler sends one header byte this often: slower than any read deadline would allow
# for the whole request, faster than an idle timeout would notice.
TRICKLE_INTERVAL_SECONDS = 0.5
REQUEST_START = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Trickle: "


def slow_package_set(directory: Path, base: Path, count: int) -> str:
    """Writes `base` plus `slow0` .. `slow<count-1>` to `directory`: distinct builds that sleep
    until NIX_TIMEOUT or shutdown ends them, named with a fresh marker (returned) so that no
    earlier run's output is reused and their processes can be found."""
    directory.mkdir(parents=True, exist_ok=True)
    nonce = "slowmark" + uuid.uuid4().hex[:12]
    slow = "\n".join(
        f"""  slow{index} = derivation {{
    name = "slow{index}-{nonce}";
    system = pkgs.busybox.system;
    builder = "${{pkgs.busybox}}/bin/sh";
    PATH = "${{pkgs.busybox}}/bin";
    args = [ "-c" "sleep 3600; mkdir $out" ];
  }};"""
        for index in range(count)
    )
    (directory / "default.nix").write_text(
        f"args:\nlet\n  pkgs = import {base} args;\nin\npkgs // {{\n{slow}\n}}\n"
    )
    return nonce


class Tricklers:
    """`count` connections, each sending a request's headers one byte at a time and never
    finishing; one the server closes is replaced, so `count` stay open throughout."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tricklers", daemon=True)

    def _open(self) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        connection.setblocking(False)
        with contextlib.suppress(OSError):
            connection.send(REQUEST_START)
        return connection

    def _run(self) -> None:
        sockets = [self._open() for _ in range(self.count)]
        while not self._stop.wait(TRICKLE_INTERVAL_SECONDS):
            for index, connection in enumerate(sockets):
                try:
                    connection.send(b"a")
                    # A closed connection reads as EOF; an answer (400/408) also means closed.
                    if connection.recv(4096, socket.MSG_PEEK) is not None:
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                connection.close()
                self.reconnects += 1
                try:
                    sockets[index] = self._open()
                except OSError:
                    time.sleep(0.05)
        for connection in sockets:
            connection.close()

    def __enter__(self) -> Tricklers:
        self._thread.start()
        # Let every connection open and send its first bytes.
        time.sleep(1.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class ColdRequests:
    """One thread per path, each a GET that waits for its cold build; statuses collected."""

    def __init__(self, port: int, paths: list[str], timeout: float) -> None:
        self.statuses: dict[str, int | str] = {}
        self._threads = [
            threading.Thread(target=self._get, args=(port, path, timeout), daemon=True)
            for path in paths
        ]

    def _get(self, port: int, path: str, timeout: float) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            self.statuses[path] = response.status
        except OSError as error:
            self.statuses[path] = type(error).__name__
        finally:
            connection.close()

    def start(self) -> ColdRequests:
        for thread in self._threads:
            thread.start()
        return self

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))


@dataclass(frozen=True)
class WarmResult:
    latencies_ms: list[float]
    failures: int

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def p99_ms(self) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def warm_gets(
    port: int,
    path: str,
    count: int,
    timeout: float,
    headers: dict[str, str] | None = None,
    give_up_after: int = 5,
) -> WarmResult:
    """`count` GETs one after another, each on a new connection (as a new client would), timed
    from connect to the last byte; a timeout or non-200 is a failure, and after `give_up_after`
    failures the rest are not attempted (a stuck server would take count x timeout)."""
    latencies: list[float] = []
    failures = 0
    for _ in range(count):
        if failures >= give_up_after:
            break
        latency = timed_get(port, path, headers or {}, timeout)
        if latency is None:
            failures += 1
        else:
            latencies.append(latency)
    return WarmResult(latencies, failures)


def timed_get(port: int, path: str, headers: dict[str, str], timeout: float) -> float | None:
    """Milliseconds from connect to the last byte of one GET on a new connection, as a new client
    makes it; None for a timeout, a refused connection or a status other than 200."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return (time.perf_counter() - started) * 1000 if response.status == 200 else None
    except OSError:
        return None
    finally:
        connection.close()


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of `pid` in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def processes_marked(marker: str) -> list[tuple[int, int, str]]:
    """(pid, ppid, command) of every process whose environment holds `marker` (a Nix builder
    inherits its derivation's name there), so a build's leftovers can be found and counted."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        found.append((int(entry.name), ppid, command))
    return found


def kill_marked(marker: str) -> int:
    """SIGKILLs the processes `processes_marked` finds (a server that orphaned its builds)."""
    import os
    import signal

    killed = 0
    for pid, _, _ in processes_marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed
