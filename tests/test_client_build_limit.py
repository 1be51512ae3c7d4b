"""The per-client cold-build limit counts distinct images, per client, and frees on exit."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from nixery.registry.errormap import as_registry_error
from nixery.registry.limits import BuildLimitReached, ClientBuildLimit


def test_distinct_images_per_client() -> None:
    limit = ClientBuildLimit(2)
    with ExitStack() as held:
        held.enter_context(limit.slot("alice", "image-1"))
        held.enter_context(limit.slot("alice", "image-1"))  # the same image again shares it
        held.enter_context(limit.slot("alice", "image-2"))
        with pytest.raises(BuildLimitReached) as refused:
            held.enter_context(limit.slot("alice", "image-3"))
        error = as_registry_error(refused.value)
        assert error.status == 429 and error.code == "TOOMANYREQUESTS"
        assert error.headers["Retry-After"] == "10"
        assert error.detail == {"limit": 2}
        held.enter_context(limit.slot("bob", "image-3"))  # another client is not affected
        assert limit.images_building("alice") == 2
    assert limit.images_building("alice") == limit.images_building("bob") == 0
    with limit.slot("alice", "image-3"):
        pass


def test_a_failed_build_frees_its_slot() -> None:
    limit = ClientBuildLimit(1)
    with pytest.raises(RuntimeError), limit.slot("alice", "image-1"):
        raise RuntimeError("Nix failed")
    with limit.slot("alice", "image-2"):
        assert limit.images_building("alice") == 1
