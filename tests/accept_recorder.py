"""A recording reverse proxy on loopback: forwards every request to a registry and writes each
request's method, path and Accept header (all values, in order) to a JSON-lines log.

Real clients pull through it so tests can pin what they send. Run as a process of its own:
    python -m tests.accept_recorder PORT UPSTREAM_URL LOG_PATH
"""

from __future__ import annotations

import http.client
import json
import re
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


def captured_accept(log_path: Path) -> list[str]:
    """The Accept values of the first manifest request by tag in the log."""
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        if re.search(r"/manifests/[^/:]+$", record["path"]) and record["accept"]:
            return [value.strip() for value in ",".join(record["accept"]).split(",")]
    raise AssertionError(f"no manifest request recorded:\n{log_path.read_text()}")


def make_handler(upstream: str, log_path: str) -> type[BaseHTTPRequestHandler]:
    target = urllib.parse.urlsplit(upstream)
    if target.hostname is None:
        raise ValueError(f"not an absolute URL: {upstream}")
    host: str = target.hostname  # declared: the handler below sees it without the narrowing
    log_lock = threading.Lock()

    class Recorder(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Docker's CLI tries TLS first and falls back to plain HTTP only when the answer to its
        # ClientHello starts with "HTTP/"; an unparseable request otherwise gets a bare
        # HTTP/0.9 error body.
        default_request_version = "HTTP/1.1"

        def _forward(self) -> None:
            with log_lock, open(log_path, "a") as log:
                record = {
                    "method": self.command,
                    "path": self.path,
                    "accept": self.headers.get_all("Accept") or [],
                    "user_agent": self.headers.get("User-Agent", ""),
                }
                log.write(json.dumps(record) + "\n")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            upstream_connection = http.client.HTTPConnection(host, target.port, timeout=600)
            upstream_connection.request(self.command, self.path, body=body, headers=headers)
            answer = upstream_connection.getresponse()
            payload = answer.read()
            self.send_response(answer.status, answer.reason)
            for name, value in answer.getheaders():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            # A HEAD answer carries the size of what a GET would return, not of its empty body.
            size = answer.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", size or str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            upstream_connection.close()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Recorder


def main() -> None:
    port, upstream, log_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(upstream, log_path))
    server.serve_forever()


if __name__ == "__main__":
    main()
