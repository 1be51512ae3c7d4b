"""Nix integration: real Nix on the offline test package set in tests/pkgs."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from nixery.build.contract import BuildFailed, BuildTimedOut, NixSource, PackagePolicy, Refusal
from nixery.build.graph import name_version
from nixery.build.nix import (
    Nix,
    Resolution,
    ResolvedPackage,
    nix_error_message,
    parse_path_info,
)
from nixery.build.popcount import dump_popularity, load_popularity, popcount
from tests.conftest import require_tools

REPO = Path(__file__).resolve().parents[1]
TEST_PACKAGES = REPO / "tests" / "pkgs"
# Without this every Nix command spends seconds trying to reach cache.nixos.org.
NIX_ENV = {"NIX_CONFIG": "substituters =\nexperimental-features = nix-command"}

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def _nix_installed() -> None:
    require_tools("nix-store", "nix-build", "nix-instantiate")


def nix_command(*args: str) -> str:
    return subprocess.run(
        args, env={**os.environ, **NIX_ENV}, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture(scope="module")
def system() -> str:
    return json.loads(
        nix_command("nix-instantiate", "--eval", "--json", "-E", "builtins.currentSystem")
    )


@pytest.fixture(scope="module")
def gcroots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gcroots")


@pytest.fixture(scope="module")
def nix(gcroots: Path) -> Nix:
    return Nix(REPO / "nix", gcroots, timeout=300, extra_env=NIX_ENV)


@pytest.fixture(scope="module")
def source() -> NixSource:
    return NixSource("path", str(TEST_PACKAGES))


def deadline(seconds: float = 300) -> float:
    return time.monotonic() + seconds


def resolve(nix: Nix, source: NixSource, system: str, *names: str) -> Resolution:
    return nix.resolve(source, names, system, deadline())


def resolve_one(nix: Nix, source: NixSource, system: str, name: str) -> ResolvedPackage:
    resolution = resolve(nix, source, system, name)
    assert resolution.not_found == ()
    (package,) = resolution.packages
    return package


BUILT_NAMES = ("hello", "app", "tool", "multi", "multi.dev", "emptydir")


@pytest.fixture(scope="module")
def built(nix: Nix, source: NixSource, system: str) -> dict[str, ResolvedPackage]:
    resolution = nix.resolve(source, BUILT_NAMES, system, deadline())
    assert resolution.not_found == ()
    nix.realise(resolution.packages, deadline())
    return {package.name: package for package in resolution.packages}


def output(packages: dict[str, ResolvedPackage], name: str, output_name: str = "out") -> str:
    return packages[name].outputs[output_name]


# --- resolving ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "attr_path"),
    [
        ("hello", ("hello",)),
        ("HELLO", ("hello",)),
        ("sdl2", ("SDL2",)),
        ("SDL2", ("SDL2",)),
        ("_1password", ("_1password",)),
        ("bashinteractive", ("bashInteractive",)),
        ("haskellpackages.shellcheck", ("haskellPackages", "ShellCheck")),
        ("python3packages.NUMPY", ("python3Packages", "numpy")),
        ("deeply.nested.leaf", ("deeply", "Nested", "Leaf")),
        ("synthetic.p123", ("synthetic", "p123")),
        ("mixed.good", ("mixed", "good")),
    ],
)
def test_resolve_matches_each_level_case_insensitively(
    nix: Nix, source: NixSource, system: str, name: str, attr_path: tuple[str, ...]
) -> None:
    package = resolve_one(nix, source, system, name)
    assert package.name == name
    assert package.attr_path == attr_path
    assert package.drv_path.endswith(".drv")
    assert os.path.exists(package.drv_path), "realising needs the .drv written by evaluation"


def test_resolve_reports_every_missing_name_in_one_evaluation(
    nix: Nix, source: NixSource, system: str
) -> None:
    missing = [
        "nope",
        "notADerivation",
        "notaderivation.foo",  # not a set of derivations
        "deeply.nested",  # a set, not a derivation
        "hello.nope",  # a level below a derivation that is not an output
        "a..b",
        "",
        "1password",  # the caller must prefix a leading digit
    ]
    removed = ["oldalias", "mixed.bad"]  # throw "... was removed", beside a good sibling
    resolution = resolve(nix, source, system, "hello", *missing, *removed, "mixed.good")
    assert resolution.not_found == tuple(missing)
    assert [(r.name, r.reason) for r in resolution.refusals] == [
        *((name, "not_found") for name in missing),
        ("oldalias", "removed"),
        ("mixed.bad", "removed"),
    ]
    assert resolution.refusals[-1].message == "mixed.bad was removed"
    assert [package.name for package in resolution.packages] == ["hello", "mixed.good"]


def test_resolve_never_forces_attributes_off_the_requested_path(
    nix: Nix, source: NixSource, system: str
) -> None:
    # mixed.bomb aborts, which tryEval cannot catch; resolving its siblings never forces it.
    resolution = resolve(nix, source, system, "mixed.good", "MIXED.GOOD", "mixed.nothing")
    assert [package.attr_path for package in resolution.packages] == [("mixed", "good")] * 2
    assert resolution.not_found == ("mixed.nothing",)


# --- refusals ----------------------------------------------------------------------------------


def test_resolve_tells_why_each_package_is_refused(
    nix: Nix, source: NixSource, system: str
) -> None:
    names = [
        "terraform",
        "openssl_1_1",
        "markedbroken",
        "darwinonly",
        "oldhello",
        "dropped",
        "failing.aborts",
        "failing.needsmissing",
        "nope",
        "hello",
    ]
    resolution = resolve(nix, source, system, *names)
    assert [package.name for package in resolution.packages] == ["hello"]
    by_name = {refusal.name: refusal for refusal in resolution.refusals}
    assert [refusal.name for refusal in resolution.refusals] == names[:-1], "in the order asked"
    assert by_name["terraform"] == Refusal(
        "terraform", "unfree", licence="bsl11", package="terraform-1.9.0"
    )
    assert by_name["openssl_1_1"] == Refusal(
        "openssl_1_1",
        "insecure",
        advisories=("OpenSSL 1.1 is end of life since 2023-09-11", "CVE-2023-5678"),
        package="openssl-1.1.1w",
    )
    assert by_name["markedbroken"] == Refusal("markedbroken", "broken", package="marked-broken-1.0")
    assert by_name["darwinonly"] == Refusal(
        "darwinonly", "unsupported_platform", platform=system, package="darwin-only-1.0"
    )
    assert by_name["oldhello"] == Refusal(
        "oldhello", "removed", "'oldHello' has been renamed to/replaced by 'hello'"
    )
    assert by_name["dropped"].reason == "removed"
    assert "has been removed" in by_name["dropped"].message
    assert by_name["failing.aborts"] == Refusal(
        "failing.aborts",
        "evaluation_error",
        "evaluation aborted with the following error message: "
        "'aborts: this package aborts evaluation on purpose'",
    )
    assert by_name["failing.needsmissing"] == Refusal(
        "failing.needsmissing", "evaluation_error", "attribute 'doesNotExist' missing"
    )
    assert by_name["nope"] == Refusal("nope", "not_found")


def test_an_abort_is_isolated_by_evaluating_names_apart(
    nix: Nix, source: NixSource, system: str
) -> None:
    good = ["hello", "app", "tool", "sdl2", "mixed.good", "multi", "coreutils"]
    resolution = resolve(nix, source, system, *good, "mixed.bomb")
    assert sorted(package.name for package in resolution.packages) == sorted(good)
    (refusal,) = resolution.refusals
    assert refusal.name == "mixed.bomb"
    assert refusal.reason == "evaluation_error"
    assert "mixed.bomb must never be forced" in refusal.message


def test_a_package_set_that_fails_as_a_whole_is_no_refusal(
    nix: Nix, system: str, tmp_path: Path
) -> None:
    (tmp_path / "default.nix").write_text('{ ... }: abort "the whole set is broken"')
    with pytest.raises(BuildFailed, match="the whole set is broken"):
        resolve(nix, NixSource("path", str(tmp_path)), system, "hello", "app")


def test_the_policy_is_nixpkgs_config(nix: Nix, source: NixSource, system: str) -> None:
    names = ("terraform", "openssl_1_1", "markedbroken")
    allowed = nix.resolve(
        source,
        names,
        system,
        deadline(),
        PackagePolicy(allow_unfree=True, permitted_insecure=("openssl-1.1.1w",)),
    )
    assert [package.name for package in allowed.packages] == ["terraform", "openssl_1_1"]
    assert [refusal.reason for refusal in allowed.refusals] == ["broken"]
    wrong_version = nix.resolve(
        source,
        names[1:2],
        system,
        deadline(),
        PackagePolicy(permitted_insecure=("openssl-1.1.1v",)),
    )
    assert [refusal.reason for refusal in wrong_version.refusals] == ["insecure"]


# --- the Nix a source demands ------------------------------------------------------------------


def test_source_info_reads_lib_minver(nix: Nix) -> None:
    plain = nix.source_info(NixSource("path", str(TEST_PACKAGES)))
    assert plain.min_version is None and plain.satisfied
    newer = nix.source_info(NixSource("path", str(REPO / "tests" / "pkgs-newer-nix")))
    assert newer.min_version == "2.18"
    assert newer.satisfied == (_version_tuple(newer.nix_version) >= (2, 18))


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


@pytest.mark.parametrize(
    ("log", "message"),
    [
        (
            "error: oldAlias was removed\n(use '--show-trace' to show detailed location information)",
            "oldAlias was removed",
        ),
        (
            "error: attribute 'zz' missing\n\n       at «string»:1:1:\n\n            1| ({}).zz",
            "attribute 'zz' missing",
        ),
        (
            # Nix >= 2.20: a trace first, the message on the last `error:` line.
            "error:\n       … while evaluating the attribute 'drvPath'\n\n"
            "       … while calling the 'throw' builtin\n         at /x.nix:3:5:\n\n"
            "       error: Package \u2018x-1.0\u2019 in /x.nix:3 is marked as broken, refusing to evaluate.",
            "Package \u2018x-1.0\u2019 in /x.nix:3 is marked as broken, refusing to evaluate.",
        ),
        (
            "error: Package \u2018t-1\u2019 has an unfree license (\u2018bsl11\u2019), refusing to evaluate.\n\n"
            "       a) To temporarily allow",
            "Package \u2018t-1\u2019 has an unfree license (\u2018bsl11\u2019), refusing to evaluate.",
        ),
        ("error: one\n       two\n       three\n       four", "one\ntwo\nthree"),
        ("warning: no error here", ""),
    ],
)
def test_nix_error_message_takes_the_first_lines_of_the_last_error(log: str, message: str) -> None:
    assert nix_error_message(log) == message


@pytest.mark.parametrize(
    ("name", "outputs"),
    [
        ("hello", {"out"}),
        ("multi", {"bin"}),  # outputsToInstall is bin and man: documentation is dropped
        ("multi.dev", {"dev"}),
        ("multi.out", {"out"}),
        ("docsOnly", {"out"}),  # outputsToInstall holds only documentation
        ("hello.out", {"out"}),
    ],
)
def test_resolve_selects_outputs(
    nix: Nix, source: NixSource, system: str, name: str, outputs: set[str]
) -> None:
    package = resolve_one(nix, source, system, name)
    assert set(package.outputs) == outputs
    for output_name, path in package.outputs.items():
        suffix = "" if output_name == "out" else f"-{output_name}"
        assert path.startswith("/nix/store/") and path.endswith(suffix)


@pytest.mark.parametrize(
    "wrapper",
    [
        "import {pkgs} {{ }}",  # an attribute set, not a function
        "{{ system }}: import {pkgs} {{ inherit system; }}",  # would reject config and overlays
        "args: import {pkgs} args",  # declares nothing: gets all three
    ],
)
def test_resolve_calls_package_sets_with_what_they_accept(
    nix: Nix, source: NixSource, system: str, tmp_path: Path, wrapper: str
) -> None:
    (tmp_path / "default.nix").write_text(wrapper.format(pkgs=TEST_PACKAGES) + "\n")
    wrapped = resolve_one(nix, NixSource("path", str(tmp_path)), system, "hello")
    assert wrapped.outputs == resolve_one(nix, source, system, "hello").outputs


def git(repo: Path, *args: str) -> str:
    identity = {
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        env={**os.environ, **identity},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_resolve_from_a_git_commit(
    nix: Nix, source: NixSource, system: str, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(TEST_PACKAGES, repo)
    git(repo, "init", "--quiet")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "test packages")
    first = git(repo, "rev-parse", "HEAD")
    default_nix = repo / "default.nix"
    default_nix.write_text(default_nix.read_text().replace("Hello from nixery!", "Changed!"))
    git(repo, "commit", "--quiet", "-am", "change hello")
    second = git(repo, "rev-parse", "HEAD")

    at_first = resolve_one(nix, NixSource("git", str(repo), first), system, "hello")
    at_second = resolve_one(nix, NixSource("git", str(repo), second), system, "hello")
    # The same expressions give the same store paths, from a directory or from git.
    assert at_first.outputs == resolve_one(nix, source, system, "hello").outputs
    assert at_second.outputs != at_first.outputs


def test_git_source_needs_a_commit() -> None:
    with pytest.raises(ValueError, match="40-hex"):
        NixSource("git", "/somewhere", "main")


# --- building and closures ---------------------------------------------------------------------


def gc_roots() -> dict[str, str]:
    roots = {}
    for line in nix_command("nix-store", "--gc", "--print-roots").splitlines():
        link, _, path = line.partition(" -> ")
        roots[link] = path
    return roots


def test_realise_builds_outputs_and_keeps_them_with_stable_gc_roots(
    nix: Nix, built: dict[str, ResolvedPackage], gcroots: Path
) -> None:
    paths = sorted({path for package in built.values() for path in package.outputs.values()})
    expected_links = {str(gcroots / os.path.basename(path)): path for path in paths}
    assert sorted(str(link) for link in gcroots.iterdir()) == sorted(expected_links)
    registered = gc_roots()
    for link, path in expected_links.items():
        assert os.readlink(link) == path
        assert os.path.exists(path)
        assert registered.get(link) == path

    nix.realise(list(built.values()), deadline())
    assert sorted(str(link) for link in gcroots.iterdir()) == sorted(expected_links)

    hello = Path(output(built, "hello"))
    run = subprocess.run([hello / "bin" / "hello"], capture_output=True, text=True, check=True)
    assert run.stdout == "Hello from nixery!\n"


def test_emptydir_keeps_empty_directories_and_modes(built: dict[str, ResolvedPackage]) -> None:
    out = Path(output(built, "emptydir"))
    assert list((out / "var" / "empty").iterdir()) == []
    assert (out / "bin" / "run").stat().st_mode & 0o777 == 0o555
    assert (out / "share" / "data.txt").stat().st_mode & 0o777 == 0o444


def test_closure_graph_has_the_runtime_references(
    nix: Nix, built: dict[str, ResolvedPackage]
) -> None:
    hello, tool = output(built, "hello"), output(built, "tool")
    multi_bin, multi_dev = output(built, "multi", "bin"), output(built, "multi.dev", "dev")
    graph = nix.closure_graph([tool, hello, multi_bin, multi_dev, hello], deadline())

    assert graph.roots == tuple(sorted({tool, hello, multi_bin, multi_dev}))
    by_name = {name_version(path): info for path, info in graph.nodes.items()}
    busybox = by_name["busybox-static"].path

    def references(name: str) -> set[str]:
        return {name_version(path) for path in by_name[name].references}

    assert references("hello-2.12") == {"busybox-static"}
    assert references("tool-1.0") == {"app-1.0"}
    assert references("app-1.0") == {"libfoo-1.0", "libbar-1.0", "busybox-static"}
    assert references("libfoo-1.0") == references("libbar-1.0") == {"libbase-1.0"}
    assert references("libbase-1.0") == set()
    assert references("multi-1.0-bin") == {"multi-1.0", "busybox-static"}
    assert references("multi-1.0-dev") == {"multi-1.0"}
    assert set(by_name) == {
        "busybox-static",
        "hello-2.12",
        "tool-1.0",
        "app-1.0",
        "libfoo-1.0",
        "libbar-1.0",
        "libbase-1.0",
        "multi-1.0",
        "multi-1.0-bin",
        "multi-1.0-dev",
    }
    assert list(graph.nodes) == sorted(graph.nodes)
    for info in graph.nodes.values():
        assert info.nar_size > 0
        assert list(info.references) == sorted(info.references)
        assert info.path not in info.references
    assert by_name["busybox-static"].nar_size > os.path.getsize(Path(busybox) / "bin" / "busybox")


def test_parse_path_info_reads_both_nix_output_shapes(
    nix: Nix, built: dict[str, ResolvedPackage]
) -> None:
    roots = [output(built, "tool"), output(built, "hello")]
    listed = nix.path_info(roots, deadline(), recursive=True)
    assert isinstance(listed, list), "Nix 2.8 prints a list"
    # Nix >= 2.19 keys the same information by path, and lists self-references.
    keyed = {
        item["path"]: {
            **{key: value for key, value in item.items() if key != "path"},
            "references": [*item["references"], item["path"]],
        }
        for item in listed
    }
    from_list = parse_path_info(listed, roots)
    assert parse_path_info(keyed, roots) == from_list
    assert len(from_list.nodes) == 7


def test_parse_path_info_rejects_incomplete_data(
    nix: Nix, built: dict[str, ResolvedPackage]
) -> None:
    hello = output(built, "hello")
    listed = nix.path_info([hello], deadline(), recursive=True)
    assert isinstance(listed, list)
    without_busybox = [item for item in listed if item["path"] == hello]
    with pytest.raises(ValueError, match="missing from the closure"):
        parse_path_info(without_busybox, [hello])
    with pytest.raises(ValueError, match=r"root .* is missing"):
        parse_path_info(listed, [hello, "/nix/store/00000000000000000000000000000000-x"])
    with pytest.raises(ValueError, match="not a valid store path"):
        parse_path_info({hello: None}, [hello])
    with pytest.raises(ValueError, match="not a valid store path"):
        parse_path_info([{"path": hello, "valid": False}], [hello])


def test_a_failed_build_reports_the_builders_output(
    nix: Nix, source: NixSource, system: str
) -> None:
    broken = resolve_one(nix, source, system, "broken")
    with pytest.raises(BuildFailed) as raised:
        nix.realise([broken], deadline())
    assert not isinstance(raised.value, BuildTimedOut)
    assert "broken: error: frobnicator.c:42: expected ';'" in raised.value.log_tail
    assert "broken: compiling frobnicator.c" in str(raised.value)


def processes_mentioning(marker: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path("/proc", entry, "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry))
    return found


def test_a_timeout_stops_nix_and_its_builders(
    nix: Nix, source: NixSource, system: str, gcroots: Path
) -> None:
    slow = resolve_one(nix, source, system, "testing.slow")
    impatient = Nix(nix.nix_dir, gcroots, timeout=3, extra_env=NIX_ENV)
    started = time.monotonic()
    with pytest.raises(BuildTimedOut) as raised:
        impatient.realise([slow], time.monotonic() + 3)
    assert time.monotonic() - started < 3 + 10
    assert "slow: started" in raised.value.log_tail
    # The builder's script and Nix's command line both name the slow package.
    assert processes_mentioning(b"slow: started") == []
    assert processes_mentioning(slow.drv_path.encode()) == []
    assert not os.path.exists(slow.outputs["out"])


def test_an_expired_deadline_starts_nothing(nix: Nix, source: NixSource, system: str) -> None:
    with pytest.raises(BuildTimedOut, match="before starting"):
        nix.resolve(source, ["hello"], system, time.monotonic() - 1)


def test_build_image_inputs_shares_one_deadline(nix: Nix, source: NixSource, system: str) -> None:
    inputs = nix.build_image_inputs(source, ["hello", "libfoo"], system)
    assert inputs.graph is not None
    assert {name_version(path) for path in inputs.graph.nodes} == {
        "hello-2.12",
        "busybox-static",
        "libfoo-1.0",
        "libbase-1.0",
    }
    missing = nix.build_image_inputs(source, ["hello", "nope"], system)
    assert missing.graph is None
    assert missing.resolution.not_found == ("nope",)


# --- popularity --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def popularity(nix: Nix, source: NixSource, system: str) -> dict[str, int]:
    return popcount(nix, source, system, realise=True, store=None)


def test_popcount_counts_the_packages_whose_closures_hold_a_path(
    popularity: dict[str, int],
) -> None:
    # The 307 packages that refer to busybox (below), and tool (through app) and syntheticAll
    # (through the synthetic packages), which do not refer to it themselves.
    assert popularity["busybox-static"] == 309
    # The diamond app -> libfoo, libbar -> libbase under tool, and python3Packages.numpy.
    assert popularity["libbase-1.0"] == 5  # libfoo, libbar, app, tool, numpy
    assert popularity["libfoo-1.0"] == popularity["libbar-1.0"] == 2  # app, tool
    assert popularity["app-1.0"] == 1  # tool
    # Held by no other package, or never built.
    for name in ("hello-2.12", "tool-1.0", "broken-1.0", "ShellCheck-1.0", "slow-1.0"):
        assert name not in popularity
    synthetic = {
        name: count for name, count in popularity.items() if name.startswith("synthetic-p")
    }
    # syntheticAll holds every synthetic package; the family's own chains hold some many times.
    assert len(synthetic) == 300
    assert min(synthetic.values()) == 1
    assert max(synthetic.values()) > 100
    assert list(popularity) == sorted(popularity)


def test_popcount_counts_references_as_nixery_does(
    popularity: dict[str, int], nix: Nix, source: NixSource, system: str
) -> None:
    references = popcount(nix, source, system, realise=False, store=None, counting="references")
    # hello, app, bashInteractive, coreutils, moreutils, nano, emptydir and all 300 synthetic
    # packages refer to busybox; multi's default output does not.
    assert references["busybox-static"] == 307
    # libfoo, libbar and python3Packages.numpy; haskellPackages is not recursed into.
    assert references["libbase-1.0"] == 3
    assert references["libfoo-1.0"] == references["libbar-1.0"] == references["app-1.0"] == 1
    for name in ("hello-2.12", "tool-1.0", "broken-1.0", "ShellCheck-1.0", "slow-1.0"):
        assert name not in references
    # The same paths count either way: those some other package holds are those some other
    # path refers to.
    assert references.keys() == popularity.keys()
    assert list(references) == sorted(references)


def test_popularity_round_trips_through_a_file_and_a_url(
    popularity: dict[str, int], tmp_path: Path
) -> None:
    dumped = dump_popularity(dict(reversed(popularity.items())))
    assert dumped == dump_popularity(popularity)
    path = tmp_path / "popularity.json"
    path.write_text(dumped)
    assert load_popularity(str(path)) == popularity

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/popularity.json"
            assert load_popularity(url) == popularity
        finally:
            server.shutdown()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "must be an object"),
        ('{"a-1.0": "3"}', "not a non-negative integer"),
        ('{"a-1.0": -1}', "not a non-negative integer"),
        ('{"a-1.0": true}', "not a non-negative integer"),
    ],
)
def test_load_popularity_rejects_other_shapes(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "popularity.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem):
        load_popularity(str(path))
