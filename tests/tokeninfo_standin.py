"""A local stand-in for Google's tokeninfo endpoint: real HTTP on 127.0.0.1, answers per token.

Each token maps to the JSON object tokeninfo would answer for it; any other token gets tokeninfo's
400 `invalid_token`. Calls are counted per token, so a test can show what a pull costs.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


class TokenInfoStandIn:
    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                token = query.get("access_token", [""])[0]
                standin.calls[token] += 1
                answer = standin.answers.get(token)
                if answer is None:
                    status, body = 400, {"error": "invalid_token"}
                else:
                    status, body = 200, answer
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/tokeninfo"

    def start(self) -> TokenInfoStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> TokenInfoStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
