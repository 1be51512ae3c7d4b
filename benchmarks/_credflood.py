"""A flood of bad robot logins against a team-mode registry, for the credentials benchmark and
its e2e test.

The flood runs in a process of its own (`python -m benchmarks._credflood PORT CLIENTS SECONDS`),
so that its threads never compete for the measuring process's GIL: the good requests timed
meanwhile measure the server, not the load generator. Each flooding client sends one bad login
after another, each with a fresh token (a repeated one would be answered from the refusal
cache), each on a new connection, and counts the answers by status.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from benchmarks._slowload import WarmResult, timed_get

# The robot of tests/team.py; its name is known, so every bad token costs a real scrypt.
FLOOD_ROBOT = "ci-bot"
FLOOD_PATH = "/v2/"
FLOOD_TIMEOUT_SECONDS = 60.0


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _flood_client(port: int, until: float, statuses: Counter[str], lock: threading.Lock) -> None:
    while time.monotonic() < until:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=FLOOD_TIMEOUT_SECONDS)
        try:
            bad = basic(FLOOD_ROBOT, secrets.token_urlsafe(32))
            connection.request("GET", FLOOD_PATH, headers={"Authorization": bad})
            response = connection.getresponse()
            response.read()
            outcome = str(response.status)
        except OSError as error:
            outcome = type(error).__name__
            time.sleep(0.05)
        finally:
            connection.close()
        with lock:
            statuses[outcome] += 1


def flood(port: int, clients: int, seconds: float) -> dict[str, int]:
    """`clients` concurrent bad logins, renewed as each is answered, for `seconds`."""
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=_flood_client, args=(port, until, statuses, lock), daemon=True)
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + FLOOD_TIMEOUT_SECONDS + 5)
    return dict(statuses)


@contextlib.contextmanager
def flooding(port: int, clients: int, seconds: float, output: Path) -> Iterator[None]:
    """Runs the flood in a child process (its own session) for the body of the `with`; the
    child's counts land in `output` as JSON. The child is waited for on exit."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._credflood", str(port), str(clients), str(seconds)],
        stdout=output.open("w"),
        start_new_session=True,
    )
    try:
        # Let every client connect and reach the server's scrypt queue.
        time.sleep(2.0)
        yield
    finally:
        try:
            process.wait(timeout=seconds + FLOOD_TIMEOUT_SECONDS + 10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def gets_for(
    port: int, path: str, headers: dict[str, str], seconds: float, timeout: float
) -> WarmResult:
    """Good requests one after another, each on a new connection, for `seconds` (at least one),
    timed from connect to the last byte; a timeout or a status other than 200 is a failure."""
    latencies: list[float] = []
    failures = 0
    until = time.monotonic() + seconds
    while not latencies or time.monotonic() < until:
        latency = timed_get(port, path, headers, timeout)
        if latency is None:
            failures += 1
        else:
            latencies.append(latency)
        if failures >= 5 and not latencies:
            break
    return WarmResult(latencies, failures)


def main() -> None:
    port, clients, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(flood(port, clients, seconds)))


if __name__ == "__main__":
    main()
