"""Cloud Functions (functions-framework) entry points of nixery-serverless.

- `registry`: the registry front, an HTTP function at the root of its host.
- `build`: the builder's handler; the Cloud Run builder serves it with functions-framework too.

Each is assembled from the environment (docs/cloud.md) when functions-framework loads this file
for it, so that bad or missing settings stop the process at start-up with one clear message
(as `nixery serve` does) instead of answering every request 500.
"""

from __future__ import annotations

import os

# Before anything imports grpc (Firestore's transport): the builder forks Nix with a preexec_fn,
# and with gRPC's fork handlers on, the child sometimes failed before exec, leaving "epoll_wait
# error: Bad file descriptor" as the whole build log (3 of 12 dev-stack multi-platform runs; 0 of
# 16 with this). Nothing here forks a process that goes on using gRPC.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import functools
import logging
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


def _assemble_at_start_up() -> None:
    """Assemble the target being loaded now, exiting with the settings error if there is one.

    functions-framework executes this file inside the Flask app it makes for the target, named
    after it; imported any other way (a test, a tool) nothing is assembled until first use.
    """
    if not flask.has_app_context():
        return
    from nixery.config import ConfigError

    target = flask.current_app.name
    assemble = {"registry": _registry_api, "build": _build_service}.get(target)
    if assemble is None:
        return
    try:
        assemble()
    except ConfigError as error:
        logging.getLogger("nixery").error("%s: bad settings: %s", target, error)
        raise SystemExit(f"nixery {target}: bad settings: {error}") from None


@functions_framework.http
def registry(request: flask.Request) -> flask.Response:
    return handle(_registry_api(), request)


@functions_framework.http
def build(request: flask.Request) -> flask.Response:
    return _build_service().handle(request)


_assemble_at_start_up()
