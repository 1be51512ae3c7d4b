"""Domain errors -> registry errors: the one place that decides the code, status, message and
headers a failure reaches the client with. Everything below the API edge raises its own errors
(names, sources, the build contract, access, storage); the edge calls `registry_error`.
"""

from __future__ import annotations

from nixery import errors
from nixery.auth.access import REALM, Forbidden, Unauthenticated, VerifierUnavailable
from nixery.build.contract import (
    BuildError,
    BuildFailed,
    BuildTimedOut,
    NixTooOld,
    PackagesRefused,
    Refusal,
    SourceUnavailable,
)
from nixery.errors import RegistryError, retry_after
from nixery.oci import InvalidDigest
from nixery.registry.limits import BuildLimitReached, ColdWaitsFull
from nixery.registry.names import InvalidName, InvalidTag, TooManyPackages
from nixery.registry.service import BlobUnknown, ManifestUnknown, build_path
from nixery.registry.sources import SourceError
from nixery.storage import BlobNotFound, StorageUnavailable

# The end of a failed build's log, as the error's detail carries it; the whole (bounded) log is
# on the build's page.
CLIENT_LOG_LINES = 40
# A source that cannot be consulted (network, git) is usually back within this.
SOURCE_RETRY_SECONDS = 30
SOURCE_UNAVAILABLE = "the package source cannot be consulted now; try again later"
# A full disk needs an operator (or a GC) to free space; an I/O hiccup passes sooner.
STORAGE_FULL_RETRY_SECONDS = 300
STORAGE_RETRY_SECONDS = 30
# A registry whose Nix is older than its package source needs an operator.
MISCONFIGURED_RETRY_SECONDS = 300
# Of Nix's error line, what a client's one-line message carries.
ERROR_LINE_CHARS = 300


def registry_error(error: Exception, base_url: str = "") -> RegistryError | None:
    """The client's view of `error`, or None for an error nobody anticipated (a 500).
    `base_url` (`http://host`) makes the link to a failed build's page absolute."""
    if isinstance(error, RegistryError):
        return error
    if isinstance(error, TooManyPackages):
        return RegistryError(
            errors.NAME_INVALID,
            f"too many packages in one image ({error.count}, the limit is {error.limit})",
            {"name": error.name, "packages": error.count, "limit": error.limit},
        )
    if isinstance(error, InvalidName):
        return RegistryError(
            errors.NAME_INVALID, None, {"name": error.name, "reason": error.reason}
        )
    if isinstance(error, InvalidTag):
        return RegistryError(errors.TAG_INVALID, None, {"tag": error.tag})
    if isinstance(error, InvalidDigest):
        return RegistryError(errors.DIGEST_INVALID, None, {"digest": str(error)})
    if isinstance(error, ManifestUnknown):
        known = RegistryError(
            errors.MANIFEST_UNKNOWN, f"manifest unknown: {error.reference}", error.detail
        )
        build = error.detail.get("build") if isinstance(error.detail, dict) else None
        return _with_build_page(known, build.rsplit("/", 1)[-1], base_url) if build else known
    if isinstance(error, BlobUnknown | BlobNotFound):
        digest = error.digest if isinstance(error, BlobUnknown) else str(error.args[0])
        return RegistryError(errors.BLOB_UNKNOWN, None, {"digest": digest})
    if isinstance(error, BuildError):
        return _with_build_page(_build_error(error), error.build_id, base_url)
    if isinstance(error, StorageUnavailable):
        # The detail (which file, which errno) is for the log; the client learns the state.
        if error.full:
            return RegistryError(
                errors.UNAVAILABLE,
                "the registry's storage is full: nothing was stored, try again later",
                headers=retry_after(STORAGE_FULL_RETRY_SECONDS),
            )
        return RegistryError(
            errors.UNAVAILABLE,
            "the registry's storage is unavailable: nothing was stored, try again later",
            headers=retry_after(STORAGE_RETRY_SECONDS),
        )
    if isinstance(error, SourceError):
        # The cause (a fetch error, git's output) is logged under the request id.
        return RegistryError(
            errors.UNAVAILABLE, SOURCE_UNAVAILABLE, headers=retry_after(SOURCE_RETRY_SECONDS)
        )
    if isinstance(error, BuildLimitReached):
        return RegistryError(
            errors.TOOMANYREQUESTS,
            str(error),
            {"limit": error.limit},
            headers=retry_after(error.retry_after),
        )
    if isinstance(error, ColdWaitsFull):
        return RegistryError(
            errors.UNAVAILABLE,
            str(error),
            {"limit": error.limit},
            headers=retry_after(error.retry_after),
        )
    if isinstance(error, Unauthenticated):
        return RegistryError(
            errors.UNAUTHORIZED,
            None,
            {"reason": error.reason},
            # The Basic challenge makes docker, podman and skopeo send credentials.
            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )
    if isinstance(error, Forbidden):
        return RegistryError(
            errors.DENIED, None, {"identity": error.identity, "reason": error.reason}
        )
    if isinstance(error, VerifierUnavailable):
        return RegistryError(
            errors.UNAVAILABLE, error.message, headers=retry_after(error.retry_after)
        )
    return None


def as_registry_error(error: Exception) -> RegistryError:
    """`registry_error`, with the 500 for what nobody anticipated."""
    return registry_error(error) or RegistryError(errors.UNKNOWN, "internal error")


def _with_build_page(known: RegistryError, build_id: str, base_url: str) -> RegistryError:
    """The error, naming the page of the build that failed: `docker pull` prints the message,
    so the way to the log is in it, and in the detail for scripts."""
    if not build_id:
        return known
    url = base_url.rstrip("/") + build_path(build_id)
    detail = {**known.detail, "build": url} if isinstance(known.detail, dict) else {"build": url}
    return RegistryError(
        known.error_code,
        f"{known.message} (build log: {url})",
        detail,
        known.headers,
        known.status,
    )


def _build_error(error: BuildError) -> RegistryError:
    image = error.repository or "the image"
    if isinstance(error, PackagesRefused):
        # 4xx, so that docker prints the message: one line naming each package and why.
        return RegistryError(
            errors.MANIFEST_UNKNOWN,
            "refused packages: "
            + ", ".join(
                f"{refusal.name} ({refusal_phrase(refusal)})" for refusal in error.refusals
            ),
            {
                "packages": error.names,
                "refusals": [refusal.to_dict() for refusal in error.refusals],
                **({"platforms": error.by_platform} if error.by_platform else {}),
            },
        )
    if isinstance(error, NixTooOld):
        # The registry's own failure, for every image of the revision: not a failed build, and
        # not the client's mistake, so a 5xx (which operators' alerts count), though docker then
        # prints only the status: the message is in the JSON body and the registry's log.
        return RegistryError(
            errors.UNAVAILABLE,
            nix_too_old_message(error),
            {"source": error.source, "required": error.required, "running": error.running},
            headers=retry_after(MISCONFIGURED_RETRY_SECONDS),
        )
    if isinstance(error, SourceUnavailable):
        return RegistryError(
            errors.UNAVAILABLE, error.message, headers=retry_after(SOURCE_RETRY_SECONDS)
        )
    if isinstance(error, BuildTimedOut):
        # Transient: what Nix finished before the limit stays in the store, so a retry goes
        # further (and another builder may be less loaded).
        return RegistryError(
            errors.UNAVAILABLE,
            f"Nix timed out building {image}; try again later",
            {"log": _client_log(error)},
            headers=retry_after(error.retry_after or SOURCE_RETRY_SECONDS),
        )
    if isinstance(error, BuildFailed):
        # Nix ran and failed: the same image key builds the same derivations, so a retry fails
        # alike (the registry answers it from memory for a while). A 4xx, so that docker and
        # podman print the message; MANIFEST_INVALID (400) reads "manifest invalid: ...",
        # where MANIFEST_UNKNOWN would read "not found" of packages that exist.
        line = nix_error_line(error.log_tail) or error.message
        return RegistryError(
            errors.MANIFEST_INVALID,
            f"Nix failed building {image}: {line}",
            {"log": _client_log(error)},
        )
    # Busy or unavailable builders: transient, so the client is told when to retry.
    return RegistryError(
        errors.UNAVAILABLE, error.message, headers=retry_after(error.retry_after or 10)
    )


def _client_log(error: BuildError) -> str:
    return "\n".join(error.log_tail.splitlines()[-CLIENT_LOG_LINES:])


def nix_error_line(log: str) -> str:
    """The first line of Nix's first error in `log` ("builder for '...drv' failed with exit
    code 1"), or "". Newer Nix may print a bare `error:` and a trace before the message, and
    ends a builder's error with `;` before the log lines it quotes."""
    for line in log.splitlines():
        text = line.strip()
        if text.startswith("error:") and text != "error:":
            text = text.removeprefix("error:").strip().rstrip(";").strip()
            if len(text) > ERROR_LINE_CHARS:
                text = text[: ERROR_LINE_CHARS - 3] + "..."
            return text
    return ""


def refusal_phrase(refusal: Refusal) -> str:
    """Why one package was refused, in a few words on one line, with the way out if there is one."""
    if refusal.reason == "not_found":
        return "not found"
    if refusal.reason == "unfree":
        licence = f" {refusal.licence}" if refusal.licence else ""
        return f"unfree licence{licence}; set NIXERY_ALLOW_UNFREE=true"
    if refusal.reason == "insecure":
        permit = refusal.package or refusal.name
        advisories = "; ".join(refusal.advisories) or "known vulnerabilities"
        return f"insecure: {advisories}; permit with NIXERY_PERMITTED_INSECURE={permit}"
    if refusal.reason == "broken":
        return "marked broken"
    if refusal.reason == "unsupported_platform":
        return f"not available on {refusal.platform or 'this platform'}"
    first_line = refusal.message.splitlines()[0] if refusal.message else ""
    if refusal.reason == "removed":
        return f"removed: {first_line}" if first_line else "removed"
    return f"evaluation error: {first_line}" if first_line else "evaluation error"


def nix_too_old_message(error: NixTooOld) -> str:
    return (
        f"registry misconfigured: the package source {error.source} needs Nix >= "
        f"{error.required}, but the registry runs Nix {error.running}; run the registry with a "
        "newer Nix (Debian 13, Ubuntu 24.04 or later), or pin an older nixpkgs channel or "
        "commit with NIXERY_CHANNEL"
    )
