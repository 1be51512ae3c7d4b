"""A real distribution's dependency shapes, as store-path closures for the layering.

The generated family of the test package set (`tests/pkgs/synthetic.nix`) makes images of 1-5
MB with a few dozen paths. Images users pull are a hundred times bigger, with a few paths that
everything needs (the C library, the shell), big runtimes (Perl, Python, Java) and a long tail.
No nixpkgs is reachable here, so the shapes come from the distribution that is: Debian 12's
package index (its `Depends`/`Pre-Depends` and `Installed-Size`), a package standing for a
store path. The snapshot (`benchmarks/data/debian-12-shapes.json`) keeps the closure of the tools
an image may name (`TOOLS`), each package's size and dependencies (the first of alternatives,
virtual packages resolved to their first provider, cycles cut in a fixed order, since store
paths cannot form cycles), and two counts over the whole archive that `nixery popcount` makes over
nixpkgs: how many packages depend on each one (`--count references`, Nixery's), and how many
hold it in their dependency closure (`--count closures`, the default).

    python -m benchmarks.shapes --write   # remake the snapshot from this machine's apt index
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from nixery.build.graph import ClosureGraph, StorePathInfo, name_version

SNAPSHOT = Path(__file__).resolve().parent / "data" / "debian-12-shapes.json"

# What an image of the benchmark may name, besides the shell every image starts with: command
# line tools, compilers and runtimes that have a package in Debian and in nixpkgs.
SHELL = ("bash", "coreutils")
TOOLS = (
    "ansible",
    "awscli",
    "bc",
    "bzip2",
    "cargo",
    "cmake",
    "curl",
    "diffutils",
    "dnsutils",
    "emacs-nox",
    "fd-find",
    "ffmpeg",
    "file",
    "findutils",
    "g++",
    "gawk",
    "gcc",
    "gdb",
    "git",
    "git-lfs",
    "gnupg",
    "golang-go",
    "gradle",
    "graphviz",
    "grep",
    "gzip",
    "htop",
    "hugo",
    "imagemagick",
    "iproute2",
    "iputils-ping",
    "jq",
    "less",
    "lsof",
    "lua5.4",
    "make",
    "maven",
    "mercurial",
    "nano",
    "netcat-openbsd",
    "nodejs",
    "openjdk-17-jre-headless",
    "openssh-client",
    "pandoc",
    "patch",
    "perl",
    "php-cli",
    "postgresql-client",
    "procps",
    "psmisc",
    "python3",
    "redis-tools",
    "ripgrep",
    "rsync",
    "ruby",
    "rustc",
    "screen",
    "sed",
    "shellcheck",
    "socat",
    "sqlite3",
    "strace",
    "subversion",
    "tmux",
    "tree",
    "unzip",
    "vim",
    "wget",
    "xz-utils",
    "zip",
    "zstd",
)

_NIX_BASE32 = "0123456789abcdfghijklmnpqrsvwxyz"


@dataclass(frozen=True)
class Package:
    version: str
    installed_size: int  # bytes
    depends: tuple[str, ...]  # packages of the snapshot, sorted; acyclic
    dependents: int  # packages of the whole archive that depend on this one
    holders: int  # packages of the whole archive, but this one, whose closures hold this one


@dataclass(frozen=True)
class Shapes:
    packages: Mapping[str, Package]

    def store_path(self, name: str) -> str:
        """A store path named as Nix names one: hash, then name-version."""
        digest = hashlib.sha256(name.encode()).digest()
        hash_part = "".join(_NIX_BASE32[byte % 32] for byte in digest[:32])
        version = re.sub(r"[^A-Za-z0-9+._?=-]", "_", self.packages[name].version)
        return f"/nix/store/{hash_part}-{name}-{version}"

    @cached_property
    def _nodes(self) -> dict[str, StorePathInfo]:
        return {
            name: StorePathInfo(
                path=self.store_path(name),
                nar_size=package.installed_size,
                references=tuple(sorted(self.store_path(dep) for dep in package.depends)),
            )
            for name, package in self.packages.items()
        }

    def closure(self, names: Iterable[str]) -> ClosureGraph:
        """The runtime closure of an image naming `names` (which must be in the snapshot)."""
        roots = sorted(set(names))
        seen = set(roots)
        queue = list(roots)
        for name in queue:  # grows while iterating: breadth-first over dependencies
            for dep in self.packages[name].depends:
                if dep not in seen:
                    seen.add(dep)
                    queue.append(dep)
        nodes = {self._nodes[name].path: self._nodes[name] for name in seen}
        return ClosureGraph(
            tuple(sorted(self.store_path(name) for name in roots)), dict(sorted(nodes.items()))
        )

    def popularity(self, count: str = "closures") -> dict[str, int]:
        """Nixery's popularity format, `{"<name-version>": count}`: per package, the archive's
        packages holding it in their closures (`closures`) or depending on it (`references`)."""
        counts = {
            name: package.holders if count == "closures" else package.dependents
            for name, package in sorted(self.packages.items())
        }
        return {
            name_version(self.store_path(name)): counted
            for name, counted in counts.items()
            if counted
        }


def load(path: Path = SNAPSHOT) -> Shapes:
    data = json.loads(path.read_text())
    return Shapes(
        {
            name: Package(
                version=entry["version"],
                installed_size=entry["installed_size"],
                depends=tuple(entry["depends"]),
                dependents=entry["dependents"],
                holders=entry["holders"],
            )
            for name, entry in data["packages"].items()
        }
    )


def _stanzas(index: str) -> Iterable[dict[str, str]]:
    for stanza in index.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            yield fields


def _first_alternatives(field: str) -> list[str]:
    """`a (>= 1) | b, c:any` -> [a, c]."""
    names = []
    for clause in field.split(","):
        first = clause.split("|")[0]
        name = re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", first).strip().split(":")[0]
        if name:
            names.append(name)
    return names


def snapshot_from_index(index: str, wanted: Iterable[str]) -> dict[str, object]:
    """The snapshot's JSON for the closure of `wanted`, from an apt index (`apt-cache
    dumpavail`): the first stanza of each package counts, as apt's candidate does."""
    raw: dict[str, tuple[str, int, list[str]]] = {}
    providers: dict[str, str] = {}
    for fields in _stanzas(index):
        name = fields["Package"]
        if name in raw:
            continue
        depends = _first_alternatives(fields.get("Pre-Depends", ""))
        depends += _first_alternatives(fields.get("Depends", ""))
        raw[name] = (
            fields.get("Version", "0"),
            int(fields.get("Installed-Size", "0")) * 1024,
            depends,
        )
        for provided in _first_alternatives(fields.get("Provides", "")):
            providers.setdefault(provided, name)

    def resolved(names: list[str], owner: str) -> list[str]:
        found = {name if name in raw else providers.get(name, "") for name in names}
        return sorted(name for name in found if name and name != owner)

    dependencies = {name: resolved(depends, name) for name, (_, _, depends) in raw.items()}
    dependents = Counter(dep for deps in dependencies.values() for dep in deps)
    depended_on_by: dict[str, list[str]] = {}
    for name, deps in dependencies.items():
        for dep in deps:
            depended_on_by.setdefault(dep, []).append(name)

    def holders(name: str) -> int:
        """The packages, but `name`, whose closures (cycles and all, as apt installs) hold it."""
        held_by = {name}
        pending = [name]
        while pending:
            for holder in depended_on_by.get(pending.pop(), ()):
                if holder not in held_by:
                    held_by.add(holder)
                    pending.append(holder)
        return len(held_by) - 1

    # Store paths form no cycles: a depth-first walk from the sorted names keeps every edge but
    # those that close a cycle, the same way every time.
    acyclic: dict[str, list[str]] = {}
    on_stack: set[str] = set()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20 * len(raw)))

    def visit(name: str) -> None:
        on_stack.add(name)
        kept = []
        for dep in dependencies[name]:
            if dep in on_stack:
                continue
            if dep not in acyclic:
                visit(dep)
            kept.append(dep)
        acyclic[name] = kept
        on_stack.discard(name)

    closure = sorted(set(wanted))
    missing = [name for name in closure if name not in raw]
    if missing:
        raise ValueError(f"not in the index: {', '.join(missing)}")
    for name in closure:
        if name not in acyclic:
            visit(name)
    return {
        "source": "Debian 12 (bookworm) amd64, `apt-cache dumpavail`",
        "packages": {
            name: {
                "version": raw[name][0],
                "installed_size": raw[name][1],
                "depends": acyclic[name],
                "dependents": dependents[name],
                "holders": holders(name),
            }
            for name in sorted(acyclic)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"remake {SNAPSHOT.name}")
    if not parser.parse_args().write:
        parser.error("nothing to do without --write")
    index = subprocess.run(
        ["apt-cache", "dumpavail"], check=True, capture_output=True, text=True
    ).stdout
    data = snapshot_from_index(index, [*SHELL, *TOOLS])
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}: {len(data['packages'])} packages")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
