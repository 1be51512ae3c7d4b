"""The pull side of the OCI distribution API over WSGI (Flask), errors always JSON."""

from __future__ import annotations

import json
import logging
import re

from flask import Flask, Request, Response, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.wsgi import wrap_file

from nixery import errors
from nixery.auth.access import Access, Identity, PublicAccess
from nixery.errors import ERROR_CONTENT_TYPE, RegistryError
from nixery.registry.service import RegistryService
from nixery.storage import BlobNotFound

log = logging.getLogger(__name__)

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
READ_METHODS = ("GET", "HEAD")
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Far above what docker, podman or skopeo send (an access token is about 2 KiB), far below
# what would let one request occupy a thread parsing.
MAX_HEADER_BYTES = 16384
# The longest valid path is a 255-character name and a digest; this leaves room for all of them.
MAX_PATH_BYTES = 2048

_ROUTES = [
    ("base", re.compile(r"/v2/?")),
    ("upload", re.compile(r"/v2/(?P<name>.+)/blobs/uploads(?:/.*)?")),
    ("manifest", re.compile(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)")),
    ("blob", re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)")),
    ("tags", re.compile(r"/v2/(?P<name>.+)/tags/list")),
]


def error_response(error: RegistryError) -> Response:
    body = error.body()
    response = Response(body, status=error.status, content_type=ERROR_CONTENT_TYPE)
    response.headers.update(API_VERSION_HEADER)
    response.headers.update(error.headers)
    return response


def _json_response(value: object) -> Response:
    response = Response(json.dumps(value, separators=(",", ":")), content_type="application/json")
    response.headers.update(API_VERSION_HEADER)
    return response


def header_bytes(http_request: Request) -> int:
    return sum(len(name) + len(value) + 4 for name, value in http_request.headers.items())


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
            raise errors.headers_too_large(size, MAX_HEADER_BYTES)
        path = http_request.path
        if len(path) > MAX_PATH_BYTES:
            raise errors.uri_too_long(len(path), MAX_PATH_BYTES)
        # Before routing: nothing, not even a redirect to a signed URL, without credentials.
        identity = self.access.authenticate(http_request.headers.get("Authorization"))
        for route, pattern in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route == "upload" or http_request.method not in READ_METHODS:
                raise errors.unsupported(http_request.method, path)
            if route == "base":
                return _json_response({})
            if route == "manifest":
                client = self.client(http_request, identity)
                return self.manifest(http_request, client=client, **match.groupdict())
            handler = getattr(self, route)
            return handler(http_request, **match.groupdict())
        raise errors.not_found(path)

    def manifest(
        self, http_request: Request, name: str, reference: str, client: str = ""
    ) -> Response:
        accept = http_request.headers.get("Accept")
        manifest = self.service.manifest(name, reference, accept, client)
        response = Response(manifest.body, content_type=manifest.media_type)
        response.headers.update(API_VERSION_HEADER)
        response.headers["Docker-Content-Digest"] = manifest.digest
        response.headers["ETag"] = f'"{manifest.digest}"'
        return response

    def blob(self, http_request: Request, name: str, digest: str) -> Response:
        record = self.service.blob(name, digest)
        headers = {**API_VERSION_HEADER, "Docker-Content-Digest": digest}
        if http_request.method == "HEAD":
            response = Response(content_type="application/octet-stream", headers=headers)
            response.content_length = record.size
            response.headers["Accept-Ranges"] = "bytes"
            return response
        url = self.service.storage.redirect_url(digest)
        if url is not None:
            return Response(status=303, headers={**headers, "Location": url})
        try:
            reader = self.service.storage.open(digest)
        except BlobNotFound:
            raise errors.blob_unknown(digest) from None
        response = Response(
            wrap_file(http_request.environ, reader),
            content_type="application/octet-stream",
            headers=headers,
            direct_passthrough=True,
        )
        response.headers["ETag"] = f'"{digest}"'
        # In place: it returns the response as werkzeug's base type.
        response.make_conditional(http_request, accept_ranges=True, complete_length=record.size)
        return response

    def tags(self, http_request: Request, name: str) -> Response:
        return _json_response({"name": name, "tags": self.service.tags(name)})


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
    return RegistryError(error.code or 400, "UNSUPPORTED", error.description or error.name)


def handle(api: RegistryApi, http_request: Request) -> Response:
    """One request, any failure turned into the registry's JSON error form."""
    try:
        return api.dispatch(http_request)
    except RegistryError as error:
        return error_response(error)
    except HTTPException as error:
        return error_response(_from_http_exception(error))
    except Exception:
        log.exception("unhandled error for %s %s", http_request.method, http_request.path)
        return error_response(RegistryError(500, "UNKNOWN", "internal error"))
