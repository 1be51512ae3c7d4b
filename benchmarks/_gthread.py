"""The serving model `nixery serve` had before waitress, kept only to be measured beside it:
gunicorn, one worker, gthread with 16 threads, the same application and settings.

    python -m benchmarks._gthread      (settings from the environment, as `nixery serve`)
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from nixery.config import load_config
from nixery.local.assemble import embedded_app

THREADS = 16


class GthreadServer(BaseApplication):
    def __init__(self, app: Flask, host: str, port: int) -> None:
        self._app = app
        self._options = {
            "bind": f"{host}:{port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": THREADS,
            "timeout": 120,
            "graceful_timeout": 10,
            "loglevel": "warning",
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        return self._app


def main() -> None:
    config = load_config(os.environ, {"host": "127.0.0.1"})
    GthreadServer(embedded_app(config), config.host, config.port).run()


if __name__ == "__main__":
    main()
