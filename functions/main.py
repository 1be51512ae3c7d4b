"""Cloud Functions (functions-framework) entry points of nixery-serverless.

- `registry`: the registry front, an HTTP function at the root of its host.
- `build`: the builder's handler; the Cloud Run builder serves it with functions-framework too.

Each is assembled on its first request from the environment (docs/cloud.md).
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

import flask
import functions_framework

from nixery.registry.api import RegistryApi, handle
from nixery.util.logs import LOG_FORMATS, configure_logging

if TYPE_CHECKING:
    from nixery.cloud.buildservice import BuildService

# Cloud Logging reads one JSON object per line on stderr; text is there for a terminal.
_requested = os.environ.get("NIXERY_LOG_FORMAT")
configure_logging(_requested if _requested in LOG_FORMATS else "json")


@functools.cache
def _registry_api() -> RegistryApi:
    from nixery.cloud.clients import cloud_config
    from nixery.cloud.function import registry_api

    return registry_api(cloud_config())


@functools.cache
def _build_service() -> BuildService:
    from nixery.cloud.builder import build_service
    from nixery.cloud.clients import cloud_config

    return build_service(cloud_config())


@functions_framework.http
def registry(request: flask.Request) -> flask.Response:
    return handle(_registry_api(), request)


@functions_framework.http
def build(request: flask.Request) -> flask.Response:
    return _build_service().handle(request)
