"""The functions check their settings when functions-framework loads them: missing or bad
settings stop the process at start-up with one clear line, instead of a 500 on every request."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nixery.cloud.devstack import StackError, start_function

pytestmark = pytest.mark.cloud

CLOUD_SETTINGS = ("GCS_BUCKET", "NIXERY_STORAGE_BACKEND", "NIXERY_BUILDER_URL")


def _environment_without_settings(**settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in CLOUD_SETTINGS}
    return {**env, **settings}


@pytest.mark.parametrize(
    ("target", "settings", "message"),
    [
        ("build", {}, "build: bad settings: the cloud deployment needs GCS_BUCKET"),
        ("registry", {}, "registry: bad settings: the cloud deployment needs GCS_BUCKET"),
        (
            "registry",
            {"GCS_BUCKET": "b", "GOOGLE_CLOUD_PROJECT": "p"},
            "registry: bad settings: the registry function needs NIXERY_BUILDER_URL",
        ),
        (
            "build",
            {"GCS_BUCKET": "b", "NIXERY_LAYER_BUDGET": "500"},
            "build: bad settings: NIXERY_LAYER_BUDGET must be between 1 and 120",
        ),
    ],
)
def test_bad_settings_stop_the_function_at_start_up(
    tmp_path: Path, target: str, settings: dict[str, str], message: str
) -> None:
    started = time.monotonic()
    with pytest.raises(StackError) as stopped:
        start_function(target, tmp_path / "log", _environment_without_settings(**settings))
    assert "exited with 1" in str(stopped.value)
    assert message in (tmp_path / "log").read_text()
    assert time.monotonic() - started < 30, "it exits rather than waiting for a request"
