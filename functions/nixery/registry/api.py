"""The pull side of the OCI distribution API over WSGI (Flask), errors always JSON."""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
import uuid
from typing import BinaryIO, cast

from flask import Flask, Request, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.wsgi import wrap_file

from nixery import errors
from nixery.auth.access import Access, Identity, PublicAccess
from nixery.errors import ERROR_CONTENT_TYPE, RegistryError
from nixery.registry import pages
from nixery.registry.errormap import SOURCE_UNAVAILABLE, registry_error
from nixery.registry.records import BUILD_ID_RE, public_source
from nixery.registry.service import RegistryService
from nixery.registry.sources import SourceError
from nixery.util.logs import log_context, project_id, trace_of

log = logging.getLogger(__name__)

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
# Names the request in the log; every answer carries it.
REQUEST_ID_HEADER = "X-Request-Id"
READ_METHODS = ("GET", "HEAD")
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Far above what docker, podman or skopeo send (an access token is about 2 KiB), far below
# what would let one request occupy a thread parsing.
MAX_HEADER_BYTES = 16384
# One header field: what nginx and gunicorn allow by default.
MAX_HEADER_FIELD_BYTES = 8190
# The longest valid path is a 255-character name and a digest; this leaves room for all of them.
MAX_PATH_BYTES = 2048

_BUILD_PAGE = re.compile(r"/builds/(?P<build_id>[^/]+)")
_ROUTES = [
    ("base", re.compile(r"/v2/?")),
    ("catalog", re.compile(r"/v2/_catalog")),
    ("upload", re.compile(r"/v2/(?P<name>.+)/blobs/uploads(?:/.*)?")),
    ("manifest", re.compile(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)")),
    ("blob", re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)")),
    ("tags", re.compile(r"/v2/(?P<name>.+)/tags/list")),
]


def error_response(error: RegistryError) -> Response:
    body = error.body()
    response = Response(body, status=error.status_line(), content_type=ERROR_CONTENT_TYPE)
    response.headers.update(API_VERSION_HEADER)
    response.headers.update(error.headers)
    return response


def _json_response(value: object) -> Response:
    response = Response(json.dumps(value, separators=(",", ":")), content_type="application/json")
    response.headers.update(API_VERSION_HEADER)
    return response


def wants_json(http_request: Request) -> bool:
    """`?format=json`, or an Accept that prefers JSON to HTML (a browser's does not)."""
    if http_request.args.get("format") == "json":
        return True
    accept = http_request.accept_mimetypes
    return accept.quality("application/json") > accept.quality("text/html") and bool(
        accept.quality("application/json")
    )


def _page_response(body: str, content_type: str, status: int = 200) -> Response:
    response = Response(body, status=status, content_type=content_type)
    response.headers.update(pages.SECURITY_HEADERS)
    response.headers["Vary"] = "Accept, Authorization"
    return response


def header_bytes(http_request: Request) -> int:
    return sum(len(name) + len(value) + 4 for name, value in http_request.headers.items())


def largest_header_field(http_request: Request) -> int:
    """The longest header line, Authorization aside: its own limit answers 401 with a reason
    (nixery.auth.access.MAX_AUTHORIZATION_BYTES)."""
    return max(
        (
            len(name) + len(value) + 2
            for name, value in http_request.headers.items()
            if name.lower() != "authorization"
        ),
        default=0,
    )


def client_address(http_request: Request, forwarded_hops: int) -> str:
    """The address a limit applies to: the peer, or the entry `forwarded_hops` from the right of
    X-Forwarded-For, the one the trusted front end appended (the left ones are the client's word)."""
    if forwarded_hops > 0:
        hops = [hop.strip() for hop in http_request.headers.get("X-Forwarded-For", "").split(",")]
        if len(hops) >= forwarded_hops and hops[-forwarded_hops]:
            return hops[-forwarded_hops]
    return http_request.remote_addr or ""


class RegistryApi:
    def __init__(
        self, service: RegistryService, access: Access | None = None, forwarded_hops: int = 0
    ) -> None:
        self.service = service
        self.access = access or PublicAccess()
        self.forwarded_hops = forwarded_hops

    def client(self, http_request: Request, identity: Identity) -> str:
        if identity.kind == "anonymous":
            return "address:" + client_address(http_request, self.forwarded_hops)
        return f"{identity.kind}:{identity.name}"

    def dispatch(self, http_request: Request) -> Response:
        size = header_bytes(http_request)
        if size > MAX_HEADER_BYTES:
            raise headers_too_large(size, MAX_HEADER_BYTES)
        field = largest_header_field(http_request)
        if field > MAX_HEADER_FIELD_BYTES:
            raise headers_too_large(field, MAX_HEADER_FIELD_BYTES)
        path = http_request.path
        if len(path) > MAX_PATH_BYTES:
            raise RegistryError(
                errors.NAME_INVALID,
                f"a request path of {len(path)} bytes exceeds the limit of {MAX_PATH_BYTES}",
                {"size": len(path), "limit": MAX_PATH_BYTES},
                status=414,
            )
        # Before routing: nothing, not even a redirect to a signed URL, without credentials.
        identity = self.access.authenticate(http_request.headers.get("Authorization"))
        page = _BUILD_PAGE.fullmatch(path)
        if path == "/" or page is not None:
            if http_request.method not in READ_METHODS:
                raise RegistryError(
                    errors.UNSUPPORTED, "pages are read-only", {"method": http_request.method}
                )
            if page is not None:
                return self.build_page(http_request, page["build_id"])
            return self.landing(http_request)
        for route, pattern in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route == "upload" or http_request.method not in READ_METHODS:
                raise RegistryError(
                    errors.UNSUPPORTED,
                    "this registry is read-only: images are built from Nix packages named in "
                    "the path",
                    {"method": http_request.method, "path": path},
                )
            if route == "base":
                return _json_response({})
            if route == "manifest":
                client = self.client(http_request, identity)
                return self.manifest(http_request, client=client, **match.groupdict())
            handler = getattr(self, route)
            return handler(http_request, **match.groupdict())
        raise RegistryError(errors.NAME_UNKNOWN, "no such endpoint", {"path": path})

    def manifest(
        self, http_request: Request, name: str, reference: str, client: str = ""
    ) -> Response:
        accept = http_request.headers.get("Accept")
        manifest = self.service.manifest(name, reference, accept, client)
        headers = {
            **API_VERSION_HEADER,
            "Docker-Content-Digest": manifest.digest,
            "ETag": f'"{manifest.digest}"',
        }
        if etag_matches(http_request, manifest.digest):
            return Response(status=304, headers=headers)
        return Response(manifest.body, content_type=manifest.media_type, headers=headers)

    def blob(self, http_request: Request, name: str, digest: str) -> Response:
        """HEAD and GET answer the same headers. Range (RFC 9110 14.2): one satisfiable byte
        range is a 206; a header that does not parse, or asks for several ranges, is ignored
        (a 200 with the whole blob, which the RFC allows and every client handles); a range
        wholly past the end is a 416."""
        record = self.service.blob(name, digest)
        headers = {
            **API_VERSION_HEADER,
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            "Accept-Ranges": "bytes",
        }
        if etag_matches(http_request, digest):
            return Response(status=304, headers=headers)
        url = self.service.storage.redirect_url(digest) if http_request.method == "GET" else None
        if url is not None:
            return Response(status=303, headers={**headers, "Location": url})
        size = record.size
        status, start, length = 200, 0, size
        wanted = single_range(http_request.headers.get("Range"), size)
        if wanted == "unsatisfiable":
            return error_response(
                RegistryError(
                    errors.UNSUPPORTED,
                    "requested range not satisfiable",
                    {"size": size},
                    headers={"Content-Range": f"bytes */{size}"},
                    status=416,
                )
            )
        if isinstance(wanted, tuple):
            start, end = wanted
            status, length = 206, end - start + 1
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if http_request.method == "HEAD":
            response = Response(status=status, content_type="application/octet-stream")
        else:
            reader = self.service.storage.open(digest)
            reader.seek(start)
            # The whole blob as the file itself: waitress then sends it from its loop.
            source = reader if status == 200 else _Limited(reader, length)
            body = wrap_file(http_request.environ, cast(BinaryIO, source))
            response = Response(
                body,
                status=status,
                content_type="application/octet-stream",
                direct_passthrough=True,
            )
        response.headers.update(headers)
        response.content_length = length
        return response

    def catalog(self, http_request: Request) -> Response:
        """The distribution spec's catalog: `n` names at most, after `last`, and a `Link` header
        to the next page when there is one."""
        count_text = http_request.args.get("n")
        count: int | None = None
        if count_text is not None:
            if not count_text.isdigit() or len(count_text) > 9:
                raise RegistryError(errors.PAGINATION_NUMBER_INVALID, None, {"n": count_text})
            count = int(count_text)
        last = http_request.args.get("last", "")
        names, more = self.service.catalog(last, count)
        response = _json_response({"repositories": names})
        if more:
            query = urllib.parse.urlencode({"last": names[-1], "n": len(names)})
            response.headers["Link"] = f'</v2/_catalog?{query}>; rel="next"'
        return response

    def tags(self, http_request: Request, name: str) -> Response:
        return _json_response({"name": name, "tags": self.service.tags(name)})

    @property
    def team(self) -> bool:
        """Team mode: pages may name who asked (identities); public mode shows no addresses."""
        return not isinstance(self.access, PublicAccess)

    def landing(self, http_request: Request) -> Response:
        commit: str | None = None
        source_error: str | None = None
        try:
            revision = self.service.source.resolve("latest")
            commit = revision.commit if revision is not None else None
        except SourceError as error:
            log.warning("landing page: %s", error)
            source_error = SOURCE_UNAVAILABLE
        landing = pages.Landing(
            host=http_request.host,
            source=public_source(self.service.source.source_id),
            commit=commit,
            source_error=source_error,
            max_packages=self.service.max_packages,
            team=self.team,
            builds=self.service.index.recent_builds(pages.RECENT_BUILDS),
        )
        if wants_json(http_request):
            return _page_response(pages.landing_json(landing), "application/json")
        return _page_response(pages.render_landing(landing), "text/html; charset=utf-8")

    def build_page(self, http_request: Request, build_id: str) -> Response:
        record = self.service.index.get_build(build_id) if BUILD_ID_RE.fullmatch(build_id) else None
        as_json = wants_json(http_request)
        if record is None:
            if as_json:
                raise RegistryError(errors.NAME_UNKNOWN, "no such build", {"build": build_id})
            html = pages.render_missing(build_id)
            return _page_response(html, "text/html; charset=utf-8", status=404)
        if as_json:
            body = json.dumps(pages.public_record(record, self.team), separators=(",", ":"))
            return _page_response(body, "application/json")
        html = pages.render_build(http_request.host, record, self.team)
        return _page_response(html, "text/html; charset=utf-8")


def create_app(service: RegistryService, access: Access | None = None) -> Flask:
    # No static route: every path goes through the access check.
    app = Flask("nixery", static_folder=None)
    # Every path reaches the registry as sent: no redirect that would skip the access check.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    api = RegistryApi(service, access)

    @app.route("/", defaults={"path": ""}, methods=ALL_METHODS, provide_automatic_options=False)
    @app.route("/<path:path>", methods=ALL_METHODS, provide_automatic_options=False)
    def registry(path: str) -> Response:
        return handle(api, request)

    @app.errorhandler(MethodNotAllowed)
    def other_method(error: MethodNotAllowed) -> Response:
        # Methods Flask does not route still meet the access check, then a JSON 405.
        return handle(api, request)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return error_response(_from_http_exception(error))

    return app


def _from_http_exception(error: HTTPException) -> RegistryError:
    return RegistryError(
        errors.UNSUPPORTED, error.description or error.name, status=error.code or 400
    )


def headers_too_large(size: int, limit: int) -> RegistryError:
    """431, as RFC 6585 names it, for headers over the application's or the server's limit."""
    return RegistryError(
        errors.UNSUPPORTED,
        f"request headers of {size} bytes exceed the limit of {limit}",
        {"size": size, "limit": limit},
        status=431,
    )


def etag_matches(http_request: Request, digest: str) -> bool:
    """If-None-Match (RFC 9110 13.1.2, weak comparison): `*` or a list holding the digest."""
    header = http_request.headers.get("If-None-Match")
    if header is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in tags or f'"{digest}"' in tags


_BYTE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def single_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The one byte range `header` asks for, as inclusive (start, end) clipped to the blob;
    "unsatisfiable" when it lies past the end; None to send the whole blob (no header, one that
    does not parse, several ranges)."""
    if header is None:
        return None
    match = _BYTE_RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # a suffix: the last N bytes
        suffix = int(last)
        if suffix == 0:
            return "unsatisfiable"
        return (max(0, size - suffix), size - 1) if size else "unsatisfiable"
    start = int(first)
    if last and int(last) < start:
        return None  # invalid, so ignored
    if start >= size:
        return "unsatisfiable"
    return start, min(int(last), size - 1) if last else size - 1


class _Limited:
    """A file object that reads at most `remaining` bytes (a 206's part of a blob)."""

    def __init__(self, reader: BinaryIO, remaining: int) -> None:
        self._reader = reader
        self._remaining = remaining

    def read(self, size: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        size = self._remaining if size < 0 else min(size, self._remaining)
        data = self._reader.read(size)
        self._remaining -= len(data)
        return data

    def close(self) -> None:
        self._reader.close()


def handle(api: RegistryApi, http_request: Request) -> Response:
    """One request, any failure turned into the registry's JSON error form, and one log line
    for it (with the trace Cloud Logging groups a request's lines by, and a request id that
    every line of the request carries and the client is shown: X-Request-Id, and in the
    message of a 5xx)."""
    trace = trace_of(http_request.headers.get("X-Cloud-Trace-Context"), project_id())
    request_id = uuid.uuid4().hex[:16]
    started = time.monotonic()
    with log_context(trace=trace, request_id=request_id):
        response = _answer(api, http_request, request_id)
        response.headers[REQUEST_ID_HEADER] = request_id
        log.info(
            "%s %s %d",
            http_request.method,
            http_request.path,
            response.status_code,
            extra={"httpRequest": _http_request_entry(http_request, response, started)},
        )
    return response


def _answer(api: RegistryApi, http_request: Request, request_id: str) -> Response:
    try:
        return api.dispatch(http_request)
    except HTTPException as error:
        return error_response(_from_http_exception(error))
    except Exception as error:
        known = registry_error(error, http_request.host_url)
        if known is None:
            log.exception("unhandled error for %s %s", http_request.method, http_request.path)
            known = RegistryError(errors.UNKNOWN, "internal error")
        elif known.status >= 500:
            # What failed inside (addresses, exception text) is logged, never sent.
            log.warning(
                "%s %s failed: %s: %s",
                http_request.method,
                http_request.path,
                type(error).__name__,
                error,
            )
        if known.status >= 500:
            known = with_request_id(known, request_id)
        return error_response(known)


def with_request_id(error: RegistryError, request_id: str) -> RegistryError:
    """The error naming the request id its log lines carry, for the operator to find them."""
    detail = error.detail if isinstance(error.detail, dict) else {}
    if error.detail is not None and not isinstance(error.detail, dict):
        detail = {"detail": error.detail}
    return RegistryError(
        error.error_code,
        f"{error.message} (request id {request_id})",
        {**detail, "request_id": request_id},
        error.headers,
        error.status,
    )


def _http_request_entry(
    http_request: Request, response: Response, started: float
) -> dict[str, object]:
    """Cloud Logging's HttpRequest: https://cloud.google.com/logging/docs/reference/v2/rest/v2/LogEntry#HttpRequest"""
    entry = {
        "requestMethod": http_request.method,
        "requestUrl": http_request.path,
        "status": response.status_code,
        "userAgent": http_request.headers.get("User-Agent", ""),
        "remoteIp": http_request.remote_addr or "",
        "latency": f"{time.monotonic() - started:.3f}s",
        "protocol": http_request.environ.get("SERVER_PROTOCOL", ""),
    }
    if response.content_length is not None:
        entry["responseSize"] = str(response.content_length)
    return entry
