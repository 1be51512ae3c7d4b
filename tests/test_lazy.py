"""OnFirstUse: made on the first attribute access, once, even under concurrent first uses."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from nixery.util.lazy import OnFirstUse


class Client:
    def __init__(self) -> None:
        self.name = "client"

    def read(self, key: str) -> str:
        return f"{self.name}:{key}"


def test_nothing_is_made_until_an_attribute_is_used() -> None:
    made: list[Client] = []

    def make() -> Client:
        made.append(Client())
        return made[-1]

    lazy = OnFirstUse(make)
    assert made == []
    assert lazy.read("a") == "client:a" and lazy.name == "client"
    assert len(made) == 1 and lazy.get() is made[0]


def test_concurrent_first_uses_make_it_once() -> None:
    calls = 0
    lock = threading.Lock()

    def slow_make() -> Client:
        nonlocal calls
        with lock:
            calls += 1
        time.sleep(0.1)
        return Client()

    lazy = OnFirstUse(slow_make)
    with ThreadPoolExecutor(8) as pool:
        clients = set(pool.map(lambda _: id(lazy.get()), range(8)))
    assert calls == 1 and len(clients) == 1


def test_a_failed_make_is_tried_again() -> None:
    attempts: Iterator[Exception | Client] = iter([RuntimeError("not yet"), Client()])

    def make() -> Client:
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    lazy = OnFirstUse(make)
    with pytest.raises(RuntimeError, match="not yet"):
        lazy.read("a")
    assert lazy.read("b") == "client:b"
