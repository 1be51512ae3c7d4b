"""Running Nix: resolving package names, building them, and reading their runtime closure.

Every Nix subprocess runs in its own process group under a shared deadline (a
`time.monotonic()` value), so one slow evaluation or build cannot outlive the request that
started it, and a timed-out build is stopped together with its builders.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nixery.build.contract import BuildFailed, BuildTimedOut, NixSource, SourceUnavailable
from nixery.build.graph import ClosureGraph, StorePathInfo

LOG_TAIL_LINES = 40
# Nix needs a moment after SIGTERM to stop its builders and release its locks.
TERMINATION_GRACE_SECONDS = 5.0
NIX_COMMAND = ("--extra-experimental-features", "nix-command")


@dataclass(frozen=True)
class ResolvedPackage:
    name: str  # as requested
    attr_path: tuple[str, ...]  # the attribute names it matched, in their real case
    drv_path: str
    outputs: Mapping[str, str]  # output name -> store path, the outputs to install


@dataclass(frozen=True)
class Resolution:
    packages: tuple[ResolvedPackage, ...]
    not_found: tuple[str, ...]


@dataclass(frozen=True)
class ImageInputs:
    resolution: Resolution
    graph: ClosureGraph | None  # None when some name was not found: nothing was built
    # False when `closure_from` gave the graph: nothing was realised (the substituter path).
    realised: bool = True


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

    def build_image_inputs(
        self,
        source: NixSource,
        names: Sequence[str],
        system: str,
        closure_from: Callable[[Sequence[str]], ClosureGraph | None] | None = None,
    ) -> ImageInputs:
        """Resolves, builds and reads the closure of `names`, all within one `timeout`.

        `closure_from(roots)`, when given, may supply the closure graph of the resolved output
        paths without realising them (a binary cache's); when it returns None, Nix realises."""
        deadline = time.monotonic() + self.timeout
        if source.kind != "path":
            self.fetch_source(source, deadline)
        resolution = self.resolve(source, names, system, deadline)
        if resolution.not_found:
            return ImageInputs(resolution, None)
        roots = [path for package in resolution.packages for path in package.outputs.values()]
        if closure_from is not None and (graph := closure_from(roots)) is not None:
            return ImageInputs(resolution, graph, realised=False)
        self.realise(resolution.packages, deadline)
        return ImageInputs(resolution, self.closure_graph(roots, deadline))

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

    def fetch_source(self, source: NixSource, deadline: float) -> None:
        """Fetches the source at its revision, so that failing to is SourceUnavailable."""
        try:
            self.evaluate_json(
                self.nix_dir / "fetch-source.nix",
                source_arguments(source),
                deadline,
                write_derivations=True,
            )
        except BuildTimedOut:
            raise
        except BuildFailed as error:
            revision = f" at {source.rev}" if source.rev else ""
            raise SourceUnavailable(
                f"cannot fetch the package source {source.location}{revision}", error.log_tail
            ) from None

    def resolve(
        self, source: NixSource, names: Sequence[str], system: str, deadline: float
    ) -> Resolution:
        result = self.evaluate_json(
            self.nix_dir / "resolve.nix",
            {**source_arguments(source), "system": system, "names": json.dumps(list(names))},
            deadline,
            # Evaluation writes the .drv files that realising needs only in read-write mode.
            write_derivations=True,
        )
        return parse_resolution(result)

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
        process = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env,
            start_new_session=True,
        )
        assert process.stdout is not None and process.stderr is not None
        stdout_chunks: list[bytes] = []
        # Builds can log without bound; only the end explains a failure.
        stderr_tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
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
        if timed_out:
            raise BuildTimedOut(f"{what}: timed out", "\n".join(stderr_tail))
        if process.returncode != 0:
            raise BuildFailed(
                f"{what}: `{' '.join(args[:2])} ...` exited with {process.returncode}",
                "\n".join(stderr_tail),
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


def parse_resolution(data: object) -> Resolution:
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
    return Resolution(packages=packages, not_found=tuple(data["notFound"]))


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


def _read_lines(stream: IO[bytes], tail: collections.deque[str]) -> None:
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
