"""NARs into layers: the reader, narinfo hashes and signatures, and the property that a layer made
from NARs is byte for byte the layer made by tarring the realised paths."""

from __future__ import annotations

import base64
import functools
import io
import os
import stat
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nixery.build.nar import NarFormatError, NarReader, nar_listing
from nixery.build.narinfo import (
    NarInfoError,
    nix32_decode,
    nix32_encode,
    parse_narinfo,
    parse_sha256,
    parse_trusted_keys,
    verify_narinfo,
)
from nixery.build.nartar import NarSource, SpoolStats, nar_members
from nixery.build.tarstream import store_members, tar_stream
from tests.substituter.binary_cache import generate_key, nix_env

REPO = Path(__file__).resolve().parent.parent.parent


def dump(path: str) -> bytes:
    return subprocess.run(
        ["nix-store", "--dump", path], check=True, capture_output=True, env=nix_env()
    ).stdout


def layer_from_nars(paths: list[str], stats: SpoolStats | None = None) -> bytes:
    sources = []
    for path in sorted(paths):
        nar = dump(path)
        sources.append(
            NarSource(path, nar_listing(io.BytesIO(nar)), functools.partial(io.BytesIO, nar))
        )
    return b"".join(tar_stream(nar_members(sources, stats)))


def layer_from_files(paths: list[str]) -> bytes:
    return b"".join(tar_stream(store_members(sorted(paths))))


# --- the reader -------------------------------------------------------------------------------


def nar_string(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data + bytes(-len(data) % 8)


def nar(*tokens: bytes) -> bytes:
    return b"".join(nar_string(token) for token in tokens)


def test_reader_gives_entries_in_archive_order_with_bodies() -> None:
    archive = nar(
        b"nix-archive-1", b"(", b"type", b"directory",
        b"entry", b"(", b"name", b"a", b"node",
        b"(", b"type", b"regular", b"executable", b"", b"contents", b"hello", b")", b")",
        b"entry", b"(", b"name", b"b", b"node",
        b"(", b"type", b"symlink", b"target", b"a", b")", b")",
        b")",
    )  # fmt: skip
    seen = []
    for entry, body in NarReader(io.BytesIO(archive)).entries():
        seen.append(
            (
                entry.path,
                entry.kind,
                entry.executable,
                b"".join(body.chunks()) if body else None,
                entry.target,
            )
        )
    assert seen == [
        ("", "directory", False, None, ""),
        ("a", "regular", True, b"hello", ""),
        ("b", "symlink", False, None, "a"),
    ]


@pytest.mark.parametrize(
    "archive",
    [
        nar(b"nix-archive-2"),
        nar(b"nix-archive-1", b"(", b"type", b"fifo", b")"),
        nar(b"nix-archive-1", b"(", b"type", b"regular", b"contents", b"abc"),  # no ")"
        nar(b"nix-archive-1", b"(", b"type", b"directory",
            b"entry", b"(", b"name", b"..", b"node", b"(", b"type", b"regular", b"contents", b"", b")", b")", b")"),
        nar(b"nix-archive-1", b"(", b"type", b"directory",
            b"entry", b"(", b"name", b"b", b"node", b"(", b"type", b"regular", b"contents", b"", b")", b")",
            b"entry", b"(", b"name", b"a", b"node", b"(", b"type", b"regular", b"contents", b"", b")", b")", b")"),
        nar(b"nix-archive-1", b"(", b"type", b"symlink", b"target", b"x", b")") + b"trailing",
        struct.pack("<Q", 1 << 40),
    ],
    ids=["magic", "fifo", "truncated", "dotdot", "unsorted", "trailing", "huge-string"],
)  # fmt: skip
def test_reader_refuses_malformed_archives(archive: bytes) -> None:
    with pytest.raises(NarFormatError):
        nar_listing(io.BytesIO(archive))


# --- narinfo ----------------------------------------------------------------------------------


def test_nix32_matches_nix() -> None:
    digest = bytes(range(32))
    nix_form = subprocess.run(
        ["nix-hash", "--type", "sha256", "--to-base32", digest.hex()],
        check=True, capture_output=True, text=True, env=nix_env(),
    ).stdout.strip()  # fmt: skip
    assert nix32_encode(digest) == nix_form
    assert nix32_decode(nix_form, 32) == digest
    assert parse_sha256("sha256:" + nix_form) == digest
    assert parse_sha256("sha256-" + base64.b64encode(digest).decode()) == digest


def signed_narinfo(tmp_path: Path) -> tuple[str, str, str]:
    """A narinfo signed by `nix store sign`'s own code (via `nix copy`), and its trusted key."""
    from tests.substituter.binary_cache import fill_cache

    key = generate_key(tmp_path / "keys", "test-cache-1")
    source = tmp_path / "file"
    source.write_text("content\n")
    path = subprocess.run(
        ["nix-store", "--add", str(source)],
        check=True,
        capture_output=True,
        text=True,
        env=nix_env(),
    ).stdout.strip()
    cache = fill_cache(tmp_path / "cache", key, [path], "none")
    hash_part = os.path.basename(path).partition("-")[0]
    return (cache / f"{hash_part}.narinfo").read_text(), key.public, path


def test_signatures_by_nix_verify_and_tampering_is_refused(tmp_path: Path) -> None:
    text, public, path = signed_narinfo(tmp_path)
    trusted = parse_trusted_keys([public])
    info = parse_narinfo(text, path)
    verify_narinfo(info, trusted)

    other = parse_trusted_keys([generate_key(tmp_path / "other", "test-cache-1").public])
    with pytest.raises(NarInfoError):
        verify_narinfo(info, other)  # right name, wrong key
    tampered = text.replace(f"NarSize: {info.nar_size}", f"NarSize: {info.nar_size + 8}")
    with pytest.raises(NarInfoError):
        verify_narinfo(parse_narinfo(tampered, path), trusted)
    unsigned = "\n".join(line for line in text.splitlines() if not line.startswith("Sig:"))
    with pytest.raises(NarInfoError):
        verify_narinfo(parse_narinfo(unsigned, path), trusted)
    with pytest.raises(NarInfoError):
        parse_narinfo(text, path + "-other")


# --- the property: NAR layer == realised layer ------------------------------------------------


def test_package_set_layers_are_identical(substitutable_closure: list[str]) -> None:
    """Every path of the tests' package sets (tests/pkgs and the substituter's shapes), alone and
    all in one layer, from NARs and from the store."""
    test_set = subprocess.run(
        ["nix-build", "--no-out-link", str(REPO / "tests" / "pkgs"),
         "-A", "hello", "-A", "app", "-A", "tool", "-A", "multi", "-A", "bashInteractive",
         "-A", "coreutils", "-A", "cacert"],
        check=True, capture_output=True, text=True, env=nix_env(),
    ).stdout.split()  # fmt: skip
    from tests.substituter.binary_cache import store_closure

    paths = sorted(set(store_closure(test_set)) | set(substitutable_closure))
    for path in paths:
        assert layer_from_nars([path]) == layer_from_files([path]), path
    stats = SpoolStats()
    assert layer_from_nars(paths, stats) == layer_from_files(paths)
    # The NAR gives include/foo/bar/inner.h before include/foo-1/x.h; the tar needs it after.
    assert stats.bodies >= 1


NAME = st.one_of(
    st.text(alphabet="ab-.+_ Z0/", min_size=1, max_size=6).filter(
        lambda name: "/" not in name and name not in (".", "..")
    ),
    st.sampled_from(["x" * 120, "long-" + "y" * 150, "a", "a-b", "a.c", "a0"]),
)
FILE = st.tuples(st.just("file"), st.binary(max_size=600), st.booleans())
LINK = st.tuples(st.just("link"), st.sampled_from(["a", "../a", "/nix/store/none", "x" * 110]))
TREE = st.recursive(
    st.one_of(FILE, LINK),
    lambda children: st.tuples(st.just("dir"), st.dictionaries(NAME, children, max_size=5)),
    max_leaves=25,
)


def materialise(path: Path, node: tuple) -> None:  # type: ignore[type-arg]
    kind = node[0]
    if kind == "file":
        path.write_bytes(node[1])
        path.chmod(0o555 if node[2] else 0o444)
    elif kind == "link":
        path.symlink_to(node[1])
    else:
        path.mkdir()
        for name, child in node[1].items():
            materialise(path / name, child)
        path.chmod(0o555)


def make_writable(root: Path) -> None:
    for directory, _, _ in os.walk(root):
        os.chmod(directory, 0o755)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    trees=st.lists(
        st.one_of(
            st.tuples(st.just("dir"), st.dictionaries(NAME, TREE, min_size=1, max_size=6)),
            FILE,
            LINK,
        ),
        min_size=1,
        max_size=3,
    ),
    deep=st.integers(min_value=0, max_value=40),
)
def test_generated_trees_are_identical(trees: list[tuple], deep: int) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as scratch:
        store = Path(scratch) / "store"
        store.mkdir()
        paths = []
        for index, tree in enumerate(trees):
            # Named like store paths: a hash part that keeps each path's members together.
            path = store / f"{index:032d}-generated"
            if deep and tree[0] == "dir":
                tree = ("dir", {**tree[1], "deep": _deep(deep)})
            materialise(path, tree)
            paths.append(str(path))
        try:
            assert layer_from_nars(paths) == layer_from_files(paths)
        finally:
            make_writable(store)


def _deep(levels: int) -> tuple:  # type: ignore[type-arg]
    node: tuple = ("file", b"bottom", False)  # type: ignore[type-arg]
    for level in range(levels):
        node = ("dir", {f"d{level}": node, f"d{level}.x": ("file", b"", True)})
    return node


def test_modes_are_the_stores(substitutable_closure: list[str]) -> None:
    """What nartar assumes: Nix canonicalises every path to 555/444 (no other bits)."""
    for path in substitutable_closure:
        for directory, _, files in os.walk(path):
            assert stat.S_IMODE(os.lstat(directory).st_mode) == 0o555
            for name in files:
                mode = os.lstat(os.path.join(directory, name)).st_mode
                assert stat.S_ISLNK(mode) or stat.S_IMODE(mode) in (0o444, 0o555)
