"""The substituter tests' own package set, built under a fresh salt per session."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.substituter.binary_cache import SaltedSet, delete_from_store, salted_package_set


@pytest.fixture(scope="session")
def substitutable_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaltedSet]:
    salted = salted_package_set(tmp_path_factory.mktemp("pkgs"), f"nar-{time.time_ns()}")
    yield salted
    delete_from_store(salted.closure)


@pytest.fixture(scope="session")
def substitutable_closure(substitutable_set: SaltedSet) -> list[str]:
    return substitutable_set.closure
