"""A local stand-in for Google's tokeninfo endpoint: real HTTP on 127.0.0.1, answers per token.

Each token maps to the JSON object tokeninfo would answer for it; any other token gets tokeninfo's
400 `invalid_token`. Calls are counted per token, so a test can show what a pull costs.

The server runs in a process of its own (`python -m tests.tokeninfo_standin PORT`), stopped by
process group like every other server the tests start, so nothing the test process does to its
own threads or descriptors can disturb it. Tests set answers and read the counts over HTTP:
`POST /answers` with a JSON object of token -> answer, `GET /calls`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from nixery.cloud.devstack import ManagedProcess, free_port, spawn

GCLOUD_CLIENT_ID = "32555940559.apps.googleusercontent.com"


def token_answer(
    email: str,
    expires_in: float = 3600,
    audience: str = GCLOUD_CLIENT_ID,
    verified: bool = True,
    hosted_domain: str | None = None,
) -> dict[str, Any]:
    """What tokeninfo answers for a gcloud access token (numbers as strings, like Google's)."""
    answer: dict[str, Any] = {
        "azp": audience,
        "aud": audience,
        "sub": str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16)),
        "scope": "openid https://www.googleapis.com/auth/userinfo.email "
        "https://www.googleapis.com/auth/cloud-platform",
        "exp": str(int(time.time() + expires_in)),
        "expires_in": str(int(max(expires_in, 0))),
        "email": email,
        "email_verified": "true" if verified else "false",
        "access_type": "offline",
    }
    if hosted_domain:
        answer["hd"] = hosted_domain
    return answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        self.answers: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/calls":
            self._reply(200, dict(self.server.calls))
            return
        token = urllib.parse.parse_qs(url.query).get("access_token", [""])[0]
        self.server.calls[token] += 1
        answer = self.server.answers.get(token)
        if answer is None:
            self._reply(400, {"error": "invalid_token"})
        else:
            self._reply(200, answer)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.answers.update(json.loads(self.rfile.read(length)))
        self._reply(200, {})

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Answers:
    """Write-only view of the stand-in's answers: `answers[token] = answer`, `update(...)`."""

    def __init__(self, standin: TokenInfoStandIn) -> None:
        self._standin = standin

    def __setitem__(self, token: str, answer: dict[str, Any]) -> None:
        self.update({token: answer})

    def update(self, answers: Mapping[str, dict[str, Any]]) -> None:
        self._standin._request("/answers", dict(answers))


class TokenInfoStandIn:
    def __init__(self) -> None:
        self._process: ManagedProcess | None = None
        self.answers = _Answers(self)

    @property
    def url(self) -> str:
        assert self._process is not None, "the stand-in is not running"
        return f"{self._process.url}/tokeninfo"

    @property
    def calls(self) -> Counter[str]:
        """How often each token was asked about, as of now."""
        return Counter(self._request("/calls"))

    def _request(self, path: str, body: object = None) -> Any:
        assert self._process is not None, "the stand-in is not running"
        data = json.dumps(body).encode() if body is not None else None
        with urllib.request.urlopen(self._process.url + path, data=data, timeout=10) as response:
            return json.loads(response.read())

    def start(self) -> TokenInfoStandIn:
        port = free_port()
        log = Path(tempfile.mkdtemp(prefix="tokeninfo-")) / "standin.log"
        command = [sys.executable, "-m", "tests.tokeninfo_standin", str(port)]
        # The repository root on the path, wherever pytest was started from.
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        self._process = spawn("tokeninfo stand-in", command, port, log, env)
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def __enter__(self) -> TokenInfoStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(arguments: Iterable[str]) -> None:
    [port] = arguments
    _Server(int(port)).serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1:])
