"""Running Nix: resolving package names, building them, and reading their runtime closure.

Every Nix subprocess runs in its own process group under a shared deadline (a
`time.monotonic()` value), so one slow evaluation or build cannot outlive the request that
started it, and a timed-out build is stopped together with its builders. The groups belong to
the server: `stop_all` ends them at shutdown, and each Nix process gets SIGTERM from the kernel
if the server dies without a shutdown (kill -9), so nothing of a build survives it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nixery.build.contract import (
    DEFAULT_POLICY,
    BuilderUnavailable,
    BuildFailed,
    BuildTimedOut,
    NixSource,
    PackagePolicy,
    Refusal,
    RefusalReason,
    SourceUnavailable,
)
from nixery.build.graph import ClosureGraph, StorePathInfo

# Builds can log without bound; only the end explains a failure. As much as a build record keeps.
LOG_TAIL_BYTES = 64 * 1024
# Nix needs a moment after SIGTERM to stop its builders and release its locks.
TERMINATION_GRACE_SECONDS = 5.0
NIX_COMMAND = ("--extra-experimental-features", "nix-command")
# A client refused because the server is stopping may retry on its successor this soon.
SHUTDOWN_RETRY_SECONDS = 5.0
# Each Nix command gets SIGTERM when the thread that started it (the server's, which waits for
# it) dies, so that nothing of a build outlives a killed server; Nix passes SIGTERM on to its
# builders. Set by util-linux's setpriv, which then execs Nix: a preexec_fn would run Python in
# the forked child of a threaded process, where gRPC's fork handlers (the cloud builder talks to
# Firestore) abort it.
DIE_WITH_PARENT: tuple[str, ...] = (
    ("setpriv", "--pdeathsig", "TERM", "--") if shutil.which("setpriv") else ()
)
# How much of Nix's error message a refusal carries: its first lines say what went wrong.
MESSAGE_LINES = 3
# What nixpkgs' aliases.nix throws for a name it dropped or renamed.
REMOVED_ALIAS_RE = re.compile(r"has been (renamed|removed)|was removed|renamed to|replaced by")


@dataclass(frozen=True)
class ResolvedPackage:
    name: str  # as requested
    attr_path: tuple[str, ...]  # the attribute names it matched, in their real case
    drv_path: str
    outputs: Mapping[str, str]  # output name -> store path, the outputs to install


@dataclass(frozen=True)
class Resolution:
    packages: tuple[ResolvedPackage, ...]
    refusals: tuple[Refusal, ...] = ()

    @property
    def not_found(self) -> tuple[str, ...]:
        return tuple(refusal.name for refusal in self.refusals if refusal.reason == "not_found")


@dataclass(frozen=True)
class ImageInputs:
    resolution: Resolution
    graph: ClosureGraph | None  # None when some name was refused: nothing was built
    # False when `closure_from` gave the graph: nothing was realised (the substituter path).
    realised: bool = True


@dataclass(frozen=True)
class Throwing:
    """A name whose attribute (or its store paths) throws: resolve.nix's tryEval dropped the
    message, so the attribute is forced alone to read it."""

    name: str
    attr_path: tuple[str, ...]


@dataclass(frozen=True)
class Evaluated:
    """One resolve.nix answer, before the throwing names are explained."""

    packages: tuple[ResolvedPackage, ...]
    refusals: tuple[Refusal, ...]
    throwing: tuple[Throwing, ...]


@dataclass(frozen=True)
class SourceInfo:
    """The Nix that runs, and the one the source demands (its lib/minver.nix), if it says."""

    nix_version: str
    min_version: str | None
    satisfied: bool


class Nix:
    def __init__(
        self,
        nix_dir: Path,
        gcroots_dir: Path,
        timeout: float,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.nix_dir = nix_dir
        self.gcroots_dir = gcroots_dir
        self.timeout = timeout
        self._env = {**os.environ, **(extra_env or {})}
        self._groups_lock = threading.Lock()
        self._running_groups: set[int] = set()
        self._stopping = False

    def stop_all(self) -> None:
        """Ends every running Nix command and refuses new ones (shutdown). Does not block: each
        command's own thread waits for its group to exit and raises BuilderUnavailable."""
        with self._groups_lock:
            self._stopping = True
            groups = list(self._running_groups)
        for group in groups:
            # SIGTERM lets Nix stop its builders; run() escalates to SIGKILL after the grace.
            _kill_group(group, signal.SIGTERM)

    def _shutting_down(self, what: str) -> BuilderUnavailable:
        return BuilderUnavailable(
            f"{what}: the registry is shutting down", retry_after=SHUTDOWN_RETRY_SECONDS
        )

    def build_image_inputs(
        self,
        source: NixSource,
        names: Sequence[str],
        system: str,
        policy: PackagePolicy = DEFAULT_POLICY,
        on_phase: Callable[[str, float], None] | None = None,
        closure_from: Callable[[Sequence[str]], ClosureGraph | None] | None = None,
    ) -> ImageInputs:
        """Resolves, builds and reads the closure of `names`, all within one `timeout`.
        `on_phase` hears how long evaluating (fetch and resolve) and realising (build and read
        the closure) took. `closure_from(roots)`, when given, may supply the closure graph of
        the resolved output paths without realising them (a binary cache's); when it returns
        None, Nix realises."""
        deadline = time.monotonic() + self.timeout
        started = time.monotonic()
        resolution = self.resolve(source, names, system, deadline, policy)
        evaluated = time.monotonic()
        if on_phase is not None:
            on_phase("evaluate", evaluated - started)
        if resolution.refusals:
            return ImageInputs(resolution, None)
        roots = [path for package in resolution.packages for path in package.outputs.values()]
        if closure_from is not None and (substituted := closure_from(roots)) is not None:
            return ImageInputs(resolution, substituted, realised=False)
        try:
            self.realise(resolution.packages, deadline)
            graph = self.closure_graph(roots, deadline)
        finally:
            # Reported when it fails too: the record of a failed build shows where time went.
            if on_phase is not None:
                on_phase("realise", time.monotonic() - evaluated)
        return ImageInputs(resolution, graph)

    def show_config(self) -> dict[str, list[str]]:
        """Nix's list-valued settings (substituters, trusted-public-keys, ...)."""
        output = self.run(
            ["nix", *NIX_COMMAND, "show-config", "--json"],
            time.monotonic() + self.timeout,
            "reading the Nix configuration",
        )
        settings = json.loads(output)
        return {
            name: [str(item) for item in entry["value"]]
            for name, entry in settings.items()
            if isinstance(entry, dict) and isinstance(entry.get("value"), list)
        }

    def source_info(self, source: NixSource) -> SourceInfo:
        """Fetches the source at its revision (failing to is SourceUnavailable) and reads the Nix
        it demands."""
        deadline = time.monotonic() + self.timeout
        try:
            data = self.evaluate_json(
                self.nix_dir / "source-info.nix",
                source_arguments(source),
                deadline,
                write_derivations=True,
            )
        except BuildTimedOut:
            raise
        except BuildFailed as error:
            raise SourceUnavailable(
                f"cannot fetch the package source {describe_source(source)}", error.log_tail
            ) from None
        if not isinstance(data, dict):
            raise BuildFailed(f"source-info.nix returned {type(data).__name__}, not an object")
        minimum = data.get("minVersion")
        return SourceInfo(
            str(data["nixVersion"]),
            None if minimum is None else str(minimum),
            bool(data["satisfied"]),
        )

    def resolve(
        self,
        source: NixSource,
        names: Sequence[str],
        system: str,
        deadline: float,
        policy: PackagePolicy = DEFAULT_POLICY,
    ) -> Resolution:
        """Every name's package or refusal, in the order asked. An abort (or any error tryEval
        cannot catch) in one name is told apart by evaluating the names apart: halves, recursively,
        so k bad names among n cost about 2k·log2(n) extra evaluations, not n."""
        arguments = {
            **source_arguments(source),
            "system": system,
            "config": json.dumps(policy.nix_config(), sort_keys=True),
        }
        try:
            raw = self._resolve_batch(arguments, names, deadline)
        except BuildTimedOut:
            raise
        except BuildFailed as error:
            # When the package set itself does not evaluate, no name is at fault.
            self._resolve_batch(arguments, [], deadline)
            raw = self._resolve_apart(arguments, names, deadline, error)
        refusals = {refusal.name: refusal for refusal in raw.refusals}
        for throwing in raw.throwing:
            refusals[throwing.name] = self._explain(arguments, throwing, deadline)
        return Resolution(
            packages=raw.packages,
            refusals=tuple(refusals[name] for name in names if name in refusals),
        )

    def _resolve_batch(
        self, arguments: Mapping[str, str], names: Sequence[str], deadline: float
    ) -> Evaluated:
        result = self.evaluate_json(
            self.nix_dir / "resolve.nix",
            {**arguments, "names": json.dumps(list(names))},
            deadline,
            # Evaluation writes the .drv files that realising needs only in read-write mode.
            write_derivations=True,
        )
        return parse_resolution(result)

    def _resolve_apart(
        self,
        arguments: Mapping[str, str],
        names: Sequence[str],
        deadline: float,
        failure: BuildFailed,
    ) -> Evaluated:
        """`names` failed to evaluate together with `failure`: find the ones at fault."""
        if len(names) == 1:
            message = nix_error_message(failure.log_tail) or failure.message
            return Evaluated((), (Refusal(names[0], "evaluation_error", message),), ())
        halves = (names[: len(names) // 2], names[len(names) // 2 :])
        packages: list[ResolvedPackage] = []
        refusals: list[Refusal] = []
        throwing: list[Throwing] = []
        for half in halves:
            try:
                part = self._resolve_batch(arguments, half, deadline)
            except BuildTimedOut:
                raise
            except BuildFailed as error:
                part = self._resolve_apart(arguments, half, deadline, error)
            packages += part.packages
            refusals += part.refusals
            throwing += part.throwing
        return Evaluated(tuple(packages), tuple(refusals), tuple(throwing))

    def _explain(
        self, arguments: Mapping[str, str], throwing: Throwing, deadline: float
    ) -> Refusal:
        """Forces a throwing name alone to read Nix's message, which tells a removed alias from
        another evaluation error."""
        try:
            self.evaluate_json(
                self.nix_dir / "explain.nix",
                {**arguments, "attrPath": json.dumps(list(throwing.attr_path))},
                deadline,
                write_derivations=False,
            )
        except BuildTimedOut:
            raise
        except BuildFailed as error:
            message = nix_error_message(error.log_tail) or error.message
        else:
            message = "evaluating it failed, but forcing it alone did not"
        reason: RefusalReason = (
            "removed" if REMOVED_ALIAS_RE.search(message) else "evaluation_error"
        )
        return Refusal(throwing.name, reason, message)

    def realise(self, packages: Sequence[ResolvedPackage], deadline: float) -> None:
        """Builds the listed outputs and keeps each alive with a GC root named after it."""
        targets = sorted(
            {f"{package.drv_path}!{output}" for package in packages for output in package.outputs}
        )
        if not targets:
            return
        self.run(["nix-store", "--realise", *targets], deadline, "building packages")
        for path in sorted({path for package in packages for path in package.outputs.values()}):
            self._add_gc_root(path, deadline)

    def closure_graph(self, roots: Sequence[str], deadline: float) -> ClosureGraph:
        return parse_path_info(self.path_info(roots, deadline, recursive=True), roots)

    def path_info(
        self,
        paths: Sequence[str],
        deadline: float,
        *,
        recursive: bool,
        store: str | None = None,
    ) -> object:
        """`nix path-info --json` of `paths`, as parsed JSON (its shape depends on Nix's version)."""
        args = ["nix", *NIX_COMMAND, "path-info", "--json"]
        if recursive:
            args.append("--recursive")
        if store is not None:
            args += ["--store", store]
        output = self.run([*args, *sorted(set(paths))], deadline, "reading store path info")
        return json.loads(output)

    def evaluate_json(
        self,
        expression: Path,
        arguments: Mapping[str, str],
        deadline: float,
        *,
        write_derivations: bool,
    ) -> object:
        args = ["nix-instantiate", "--eval", "--strict", "--json"]
        if write_derivations:
            args.append("--read-write-mode")
        args.append(str(expression))
        for name, value in arguments.items():
            args += ["--argstr", name, value]
        return json.loads(self.run(args, deadline, f"evaluating {expression.name}"))

    def run(self, args: Sequence[str], deadline: float, what: str) -> str:
        """Runs a Nix command until `deadline`, returning its stdout; raises BuildFailed/BuildTimedOut."""
        if time.monotonic() >= deadline:
            raise BuildTimedOut(f"{what}: out of time before starting")
        with self._groups_lock:
            if self._stopping:
                raise self._shutting_down(what)
            process = subprocess.Popen(
                [*DIE_WITH_PARENT, *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env,
                start_new_session=True,
            )
            self._running_groups.add(process.pid)
        try:
            return self._finish(process, args, deadline, what)
        finally:
            with self._groups_lock:
                self._running_groups.discard(process.pid)

    def _finish(
        self, process: subprocess.Popen[bytes], args: Sequence[str], deadline: float, what: str
    ) -> str:
        assert process.stdout is not None and process.stderr is not None
        stdout_chunks: list[bytes] = []
        stderr_tail = LogTail(LOG_TAIL_BYTES)
        readers = [
            threading.Thread(target=_read_all, args=(process.stdout, stdout_chunks), daemon=True),
            threading.Thread(target=_read_lines, args=(process.stderr, stderr_tail), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            timed_out = not _wait_until_exited(process.pid, deadline - time.monotonic())
        except BaseException:
            _stop_process_group(process.pid)
            raise
        if timed_out:
            _stop_process_group(process.pid)
        # The leader is a zombie now, so its group id cannot have been reused: whatever it left
        # behind in its group goes with it.
        _kill_group(process.pid, signal.SIGKILL)
        process.wait()
        for reader in readers:
            reader.join()
        if self._stopping:
            raise self._shutting_down(what)
        if timed_out:
            raise BuildTimedOut(f"{what}: timed out", stderr_tail.text())
        if process.returncode != 0:
            raise BuildFailed(
                f"{what}: `{' '.join(args[:2])} ...` exited with {process.returncode}",
                stderr_tail.text(),
            )
        return b"".join(stdout_chunks).decode()

    def _add_gc_root(self, store_path: str, deadline: float) -> None:
        link = self.gcroots_dir / os.path.basename(store_path)
        if os.path.islink(link) and os.readlink(link) == store_path:
            return
        self.gcroots_dir.mkdir(parents=True, exist_ok=True)
        # --add-root registers the link as an indirect root, which a plain symlink is not.
        self.run(
            ["nix-store", "--realise", "--add-root", str(link), store_path],
            deadline,
            f"adding a GC root for {store_path}",
        )


def source_arguments(source: NixSource) -> dict[str, str]:
    """The srcType/src/rev arguments that resolve.nix and popcount.nix take."""
    location = source.location
    if source.kind == "path" or (source.kind == "git" and "://" not in location):
        location = os.path.abspath(location)
    return {"srcType": source.kind, "src": location, "rev": source.rev or ""}


def describe_source(source: NixSource) -> str:
    revision = f" at {source.rev}" if source.rev else ""
    return f"{source.location}{revision}"


def parse_resolution(data: object) -> Evaluated:
    """resolve.nix's answer; a refusal that "throws" is kept apart until it is explained."""
    if not isinstance(data, dict):
        raise BuildFailed(f"resolve.nix returned {type(data).__name__}, not an object")
    packages = tuple(
        ResolvedPackage(
            name=entry["name"],
            attr_path=tuple(entry["attrPath"]),
            drv_path=entry["drvPath"],
            outputs=dict(sorted(entry["outputs"].items())),
        )
        for entry in data["found"]
    )
    refused = data["refused"]
    return Evaluated(
        packages,
        tuple(_refusal(entry) for entry in refused if entry["reason"] != "throws"),
        tuple(
            Throwing(str(entry["name"]), tuple(str(part) for part in entry["attrPath"]))
            for entry in refused
            if entry["reason"] == "throws"
        ),
    )


def _refusal(entry: Mapping[str, Any]) -> Refusal:
    return Refusal(
        str(entry["name"]),
        entry["reason"],
        licence=str(entry.get("licence") or ""),
        advisories=tuple(str(advisory) for advisory in entry.get("advisories") or ()),
        platform=str(entry.get("platform") or ""),
        package=str(entry.get("package") or ""),
    )


def nix_error_message(log: str, max_lines: int = MESSAGE_LINES) -> str:
    """The first lines of Nix's own error message in its stderr, without location or trace.

    Nix 2.8 prints `error: <message>`; newer Nix may print `error:` and a trace first, with the
    message on the last `error: ...` line. Either way it is the last line starting `error:` that
    has text.
    """
    lines = [line.strip() for line in log.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith("error:") and line != "error:"]
    if not starts:
        return ""
    message = [lines[starts[-1]].removeprefix("error:").strip()]
    for line in lines[starts[-1] + 1 :]:
        if not line or line.startswith(("at ", "(use '--show-trace'", "… ")):
            break
        message.append(line)
    return "\n".join(message[:max_lines])


def parse_path_info(data: object, roots: Sequence[str]) -> ClosureGraph:
    """Reads `nix path-info --json --recursive` output into a closure graph.

    Nix 2.8 prints a list of objects with a "path" key; Nix >= 2.19 prints an object keyed by
    path (null for an invalid path). Both are accepted.
    """
    entries: list[tuple[str, object]]
    if isinstance(data, list):
        entries = [(_path_of(item), item) for item in data]
    elif isinstance(data, dict):
        entries = list(data.items())
    else:
        raise ValueError(f"path info must be a list or an object, not {type(data).__name__}")

    nodes: dict[str, StorePathInfo] = {}
    for path, info in entries:
        if not isinstance(info, dict) or info.get("valid") is False:
            raise ValueError(f"{path} is not a valid store path")
        references = info.get("references")
        nar_size = info.get("narSize")
        if not isinstance(references, list) or not isinstance(nar_size, int):
            raise ValueError(f"path info of {path} lacks references or narSize")
        nodes[path] = StorePathInfo(
            path=path,
            nar_size=nar_size,
            references=tuple(sorted({str(ref) for ref in references} - {path})),
        )

    for info in nodes.values():
        for reference in info.references:
            if reference not in nodes:
                raise ValueError(f"{info.path} references {reference}, missing from the closure")
    sorted_roots = tuple(sorted(set(roots)))
    for root in sorted_roots:
        if root not in nodes:
            raise ValueError(f"root {root} is missing from the path info")
    return ClosureGraph(roots=sorted_roots, nodes=dict(sorted(nodes.items())))


def _path_of(item: object) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("path"), str):
        raise ValueError(f"path info entry without a path: {item!r}")
    return item["path"]


def _read_all(stream: IO[bytes], chunks: list[bytes]) -> None:
    while chunk := stream.read(65536):
        chunks.append(chunk)


class LogTail:
    """The last lines of a stream, at most `limit` bytes of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lines: collections.deque[str] = collections.deque()
        self._bytes = 0

    def append(self, line: str) -> None:
        line = line[-self.limit :]
        self._lines.append(line)
        self._bytes += len(line.encode()) + 1
        while self._bytes > self.limit and len(self._lines) > 1:
            self._bytes -= len(self._lines.popleft().encode()) + 1

    def text(self) -> str:
        return "\n".join(self._lines)


def _read_lines(stream: IO[bytes], tail: LogTail) -> None:
    for line in stream:
        tail.append(line.decode(errors="replace").rstrip("\n"))


def _wait_until_exited(pid: int, timeout: float) -> bool:
    """Waits for `pid` to exit without reaping it (so its pid and group id stay reserved)."""
    end = time.monotonic() + timeout
    delay = 0.001
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        remaining = end - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)
    return True


def _stop_process_group(group: int) -> None:
    # SIGTERM lets Nix kill its builders (which run in sessions of their own, out of reach of
    # a group signal) and release its locks; SIGKILL if it does not stop in time.
    _kill_group(group, signal.SIGTERM)
    if not _wait_until_exited(group, TERMINATION_GRACE_SECONDS):
        _kill_group(group, signal.SIGKILL)
        _wait_until_exited(group, TERMINATION_GRACE_SECONDS)


def _kill_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)
