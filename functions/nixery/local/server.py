"""Serve a WSGI app with gunicorn: one worker process (builds are de-duplicated in it), many threads."""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn import glogging, util
from gunicorn.app.base import BaseApplication
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker

from nixery import errors
from nixery.errors import ERROR_CONTENT_TYPE, RegistryError
from nixery.registry.api import API_VERSION_HEADER

# gunicorn's own limits, checked before the application sees a request; the application's
# tighter total (nixery.registry.api.MAX_HEADER_BYTES) covers many headers that are each under these.
LIMIT_REQUEST_LINE = 4094
LIMIT_REQUEST_FIELD_SIZE = 8190
LIMIT_REQUEST_FIELDS = 100
_REASONS = {400: "Bad Request", 414: "URI Too Long", 431: "Request Header Fields Too Large"}


def parse_error(exc: BaseException) -> RegistryError | None:
    """The registry's error for a request gunicorn could not parse, or None to leave it be."""
    if isinstance(exc, http_errors.LimitRequestLine):
        return RegistryError(
            errors.NAME_INVALID,
            "request line too long",
            {"limit": LIMIT_REQUEST_LINE},
            status=414,
        )
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return RegistryError(errors.UNSUPPORTED, "request headers too large", str(exc), status=431)
    if isinstance(
        exc,
        (
            http_errors.InvalidRequestLine,
            http_errors.InvalidRequestMethod,
            http_errors.InvalidHTTPVersion,
            http_errors.InvalidHeader,
            http_errors.InvalidHeaderName,
        ),
    ):
        return RegistryError(errors.UNSUPPORTED, "malformed HTTP request", str(exc), status=400)
    return None


class JsonErrorWorker(ThreadWorker):
    """gunicorn's threaded worker, answering requests it rejects in the registry's JSON form
    instead of gunicorn's HTML page, so clients see the same errors everywhere."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        error = parse_error(exc)
        if error is None:
            super().handle_error(req, client, addr, exc)
            return
        self.log.warning("invalid request from %s: %s", (addr or ("",))[0], exc)
        body = error.body()
        head = [
            f"HTTP/1.1 {error.status} {_REASONS[error.status]}",
            "Connection: close",
            f"Content-Type: {ERROR_CONTENT_TYPE}",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in API_VERSION_HEADER.items()),
        ]
        try:
            util.write_nonblock(client, ("\r\n".join(head) + "\r\n\r\n").encode() + body)
        except OSError:
            self.log.debug("failed to send the error response")


class RootLogger(glogging.Logger):
    """gunicorn's own lines through the root logger, so they take the format `nixery serve` was
    given (a JSON line each with --log-format json) instead of gunicorn's."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.handlers.clear()
            logger.propagate = True


class RegistryServer(BaseApplication):
    def __init__(self, app: Flask, host: str, port: int, threads: int) -> None:
        self._app = app
        self._options = {
            "bind": f"{host}:{port}",
            "workers": 1,
            "worker_class": JsonErrorWorker,
            "threads": threads,
            # A cold manifest request waits for its Nix build; the gthread worker keeps
            # heartbeating meanwhile, so this only bounds a wedged worker.
            "timeout": 120,
            "limit_request_line": LIMIT_REQUEST_LINE,
            "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
            "limit_request_fields": LIMIT_REQUEST_FIELDS,
            "graceful_timeout": 10,
            # nixery.registry.api logs each request, in the chosen format.
            "accesslog": None,
            "logger_class": RootLogger,
            "loglevel": "info",
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)
        # Newer gunicorn opens a control socket at one fixed path per user, which several
        # registries on one machine would fight over; nothing here uses it.
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        return self._app
