"""Serve a WSGI app with gunicorn: one worker process (builds are de-duplicated in it), many threads."""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


class RegistryServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, host: str, port: int, threads: int) -> None:
        self._app = app
        self._options = {
            "bind": f"{host}:{port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": threads,
            # A cold manifest request waits for its Nix build; the gthread worker keeps
            # heartbeating meanwhile, so this only bounds a wedged worker.
            "timeout": 120,
            "graceful_timeout": 10,
            "accesslog": "-",
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
