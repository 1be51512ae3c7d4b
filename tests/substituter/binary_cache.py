"""A real Nix binary cache on loopback for the substituter's tests and benchmark.

`nix-store --generate-binary-cache-key` makes the signing key, `nix copy --to file://...` fills
the cache (signed, compressed as asked), and `CacheServer` serves its directory over HTTP on
127.0.0.1, optionally breaking connections in the middle of chosen files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OFFLINE_NIX_CONFIG = "substituters =\nexperimental-features = nix-command"


def nix_env() -> dict[str, str]:
    return {**os.environ, "NIX_CONFIG": OFFLINE_NIX_CONFIG}


@dataclass(frozen=True)
class SigningKey:
    secret_file: Path
    public: str  # name:base64, as trusted-public-keys lists it


def generate_key(directory: Path, name: str) -> SigningKey:
    directory.mkdir(parents=True, exist_ok=True)
    secret, public = directory / f"{name}.secret", directory / f"{name}.public"
    subprocess.run(
        ["nix-store", "--generate-binary-cache-key", name, str(secret), str(public)],
        check=True,
        env=nix_env(),
    )
    return SigningKey(secret, public.read_text().strip())


def fill_cache(
    directory: Path,
    key: SigningKey,
    paths: Sequence[str],
    compression: str,
    *,
    listings: bool = False,
) -> Path:
    """Copies `paths` and their closures into a `file://` cache at `directory`."""
    options = f"secret-key={key.secret_file}&compression={compression}"
    if listings:
        options += "&write-nar-listing=true"
    subprocess.run(
        ["nix", "copy", "--to", f"file://{directory}?{options}", *paths],
        check=True,
        capture_output=True,
        env=nix_env(),
    )
    return directory


def store_closure(paths: Sequence[str]) -> list[str]:
    output = subprocess.run(
        ["nix-store", "--query", "--requisites", *paths],
        check=True,
        capture_output=True,
        text=True,
        env=nix_env(),
    ).stdout
    return sorted(output.split())


def delete_from_store(paths: Sequence[str]) -> None:
    """Removes unreferenced paths (the tests' own salted ones) so the builder must fetch them."""
    present = [path for path in paths if os.path.lexists(path)]
    if present:
        subprocess.run(
            ["nix-store", "--delete", *present], check=True, capture_output=True, env=nix_env()
        )


def copy_cache(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination)
    return destination


class _Handler(SimpleHTTPRequestHandler):
    cut: Callable[[str], int | None]
    served: list[tuple[str, int]]
    count: Callable[[int], None]

    def copyfile(self, source, outputfile) -> None:  # type: ignore[no-untyped-def]
        """Every body byte counted: what a client fetched from the cache."""
        while chunk := source.read(1 << 16):
            outputfile.write(chunk)
            self.count(len(chunk))

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the tests read `served` instead

    def do_GET(self) -> None:
        limit = self.cut(self.path)
        if limit is None:
            super().do_GET()
            return
        # The whole length announced, part of the body sent, then the connection closed.
        file = Path(self.directory) / self.path.lstrip("/")
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:limit])
        self.count(min(limit, len(data)))
        self.wfile.flush()
        self.close_connection = True
        self.served.append((self.path, limit))


class CacheServer:
    """Serves a cache directory on 127.0.0.1; `cut(path)` may name a byte count after which the
    response for `path` breaks off."""

    def __init__(self, directory: Path) -> None:
        self.cut: Callable[[str], int | None] = lambda path: None
        self.served: list[tuple[str, int]] = []
        self.bytes_served = 0
        self._count_lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class(directory))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler_class(self, directory: Path) -> type[_Handler]:
        server = self

        class Handler(_Handler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                self.cut = server.cut
                self.served = server.served
                self.count = server._count
                super().__init__(*args, directory=str(directory), **kwargs)  # type: ignore[arg-type]

        return Handler

    def _count(self, size: int) -> None:
        with self._count_lock:
            self.bytes_served += size

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> CacheServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@contextmanager
def serving(directory: Path) -> Iterator[CacheServer]:
    with CacheServer(directory) as server:
        yield server


REPO = Path(__file__).resolve().parent.parent.parent
PACKAGE_SET = REPO / "tests" / "pkgs" / "substitutable.nix"
ATTRIBUTES = ("busybox", "bashInteractive", "cacert", "iana-etc", "base", "shapes", "single")


@dataclass(frozen=True)
class SaltedSet:
    directory: Path  # a package set (default.nix) like tests/pkgs, for resolve.nix
    outputs: dict[str, str]  # attribute -> output path
    closure: list[str]


def salted_package_set(directory: Path, salt: str) -> SaltedSet:
    """tests/pkgs/substitutable.nix under `salt`, built: new store paths only these tests use."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "default.nix").write_text(
        f'{{ ... }}@args: import {PACKAGE_SET} (args // {{ salt = "{salt}"; }})\n'
    )
    outputs = {}
    for attribute in ATTRIBUTES:
        outputs[attribute] = subprocess.run(
            ["nix-build", "--no-out-link", str(directory), "-A", attribute],
            check=True,
            capture_output=True,
            text=True,
            env=nix_env(),
        ).stdout.strip()
    return SaltedSet(directory, outputs, store_closure(list(outputs.values())))
