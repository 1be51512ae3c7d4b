"""Layer blobs: real files in, tarballs read back with tarfile and checked byte by byte."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from isal import igzip_threaded

from nixery.build import gzipstream
from nixery.build.layers import (
    LayerBlob,
    write_store_layer,
    write_symlink_layer,
)
from nixery.oci import OCI_LAYER
from nixery.storage import AbortUnlessCommitted, BlobWriter
from nixery.storage.filesystem import FilesystemStorage
from tests.conftest import require_tools

LATIN_1_NAME = os.fsdecode(b"caf\xe9")  # not valid UTF-8
NIX_ENV = {**os.environ, "NIX_CONFIG": "substituters =\nexperimental-features = nix-command"}


def store_path(store: Path, name: str) -> Path:
    """A directory named like a store path; the hash part is derived from the name to stay stable."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    path = store / f"{digest}-{name}"
    path.mkdir(parents=True)
    return path


def write_file(path: Path, content: bytes = b"", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    return path


def stored_bytes(storage: FilesystemStorage, blob: LayerBlob) -> bytes:
    with storage.open(blob.digest) as stored:
        return stored.read()


def read_layer(storage: FilesystemStorage, blob: LayerBlob) -> tuple[list[tarfile.TarInfo], bytes]:
    """The members and the raw tar, after checking the blob against its reported identity."""
    compressed = stored_bytes(storage, blob)
    assert blob.digest == "sha256:" + hashlib.sha256(compressed).hexdigest()
    assert blob.size == len(compressed) == storage.size(blob.digest)
    raw_tar = gzip.decompress(compressed)
    assert blob.diff_id == "sha256:" + hashlib.sha256(raw_tar).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(raw_tar), mode="r:") as archive:
        return archive.getmembers(), raw_tar


def member_map(members: list[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    return {member.name: member for member in members}


def assert_deterministic_headers(members: list[tarfile.TarInfo], raw_tar: bytes) -> None:
    names = [member.name for member in members]
    assert names == sorted(names, key=os.fsencode)
    assert len(names) == len(set(names))
    for member in members:
        assert not member.name.startswith("/")
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mtime == 1
        assert set(member.pax_headers) <= {"path", "linkpath", "hdrcharset"}
    for volatile in (b"mtime=", b"atime=", b"ctime=", b"uid=", b"gid=", b"uname=", b"gname="):
        assert volatile not in raw_tar


def layer_in_subprocess(function: str, paths: list[str], root: Path, hash_seed: str) -> str:
    """The layer written by a fresh interpreter with another hash seed; returns its digest."""
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from nixery.build import layers
        from nixery.storage.filesystem import FilesystemStorage
        function, paths, root = json.loads(sys.argv[1])
        blob = getattr(layers, function)(paths, FilesystemStorage(Path(root)))
        print(blob.digest)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps([function, paths, str(root)])],
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
def storage(tmp_path: Path) -> FilesystemStorage:
    return FilesystemStorage(tmp_path / "storage")


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    """A package exercising every kind of entry a store path can hold."""
    package = store_path(tmp_path / "nix" / "store", "hello-2.12")
    write_file(package / "bin" / "hello", b"#!/bin/sh\necho hello\n", 0o755)
    write_file(package / "share" / "doc" / "README", b"read me\n", 0o444)
    os.link(package / "share" / "doc" / "README", package / "share" / "doc" / "README.hardlink")
    os.symlink("hello", package / "bin" / "hi")
    os.symlink("/nix/store/does-not-matter/bin/sh", package / "bin" / "absolute-link")
    (package / "var" / "empty").mkdir(parents=True)
    # Names that a depth-first walk would order differently from a bytewise sort ('-' < '/').
    write_file(package / "lib" / "a" / "x", b"x")
    write_file(package / "lib" / "a-c", b"a-c")
    long_name = "n" * 120
    write_file(package / "share" / long_name / long_name, b"long", 0o644)
    os.symlink(long_name, package / "share" / ("l" * 150))
    # Store paths may hold any bytes in names: UTF-8 and not.
    write_file(package / "share" / "naïve", b"utf-8")
    write_file(package / "share" / LATIN_1_NAME, b"latin-1")
    return package


@pytest.mark.parametrize("threads", [1, 3])
def test_store_layer_bytes_do_not_depend_on_the_compression_threads(
    tmp_path: Path, storage: FilesystemStorage, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    package = store_path(tmp_path / "nix" / "store", "blocks-1.0")
    # Several compression blocks of compressible and incompressible data, and an uneven tail.
    write_file(package / "text", b"nixery layer block " * 300_000, 0o444)
    write_file(package / "random", os.urandom(3 * 1024 * 1024 + 12345), 0o444)
    first = write_store_layer([str(package)], storage)

    monkeypatch.setattr(gzipstream, "COMPRESSION_THREADS", threads)
    other_storage = FilesystemStorage(tmp_path / f"threads-{threads}")
    assert write_store_layer([str(package)], other_storage) == first
    assert stored_bytes(other_storage, first) == stored_bytes(storage, first)
    # One standard gzip member that GNU gzip accepts and whose tar is the diff_id.
    blob_path = other_storage.blob_path(first.digest)
    subprocess.run(["gzip", "-t", str(blob_path)], check=True)
    tar_bytes = subprocess.run(
        ["gzip", "-dc", str(blob_path)], check=True, capture_output=True
    ).stdout
    assert first.diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def test_store_layer_identity_matches_stored_bytes(hello: Path, storage: FilesystemStorage) -> None:
    blob = write_store_layer([str(hello)], storage)
    members, raw_tar = read_layer(storage, blob)
    assert len(raw_tar) % tarfile.RECORDSIZE == 0
    assert members


def test_store_layer_entries_keep_kind_mode_and_content(
    hello: Path, storage: FilesystemStorage
) -> None:
    blob = write_store_layer([str(hello)], storage)
    members, raw_tar = read_layer(storage, blob)
    assert_deterministic_headers(members, raw_tar)
    by_name = member_map(members)
    root = str(hello).lstrip("/")

    ancestors = Path(root).parents
    for ancestor in list(ancestors)[:-1]:
        assert by_name[str(ancestor)].isdir()
        assert by_name[str(ancestor)].mode == 0o755
    assert by_name[root].isdir()

    hello_bin = by_name[f"{root}/bin/hello"]
    assert hello_bin.isreg() and hello_bin.mode == 0o755
    assert by_name[f"{root}/share/doc/README"].mode == 0o444
    assert by_name[f"{root}/var/empty"].isdir()

    assert by_name[f"{root}/bin/hi"].issym()
    assert by_name[f"{root}/bin/hi"].linkname == "hello"
    assert by_name[f"{root}/bin/absolute-link"].linkname == "/nix/store/does-not-matter/bin/sh"

    with tarfile.open(fileobj=io.BytesIO(raw_tar), mode="r:") as archive:
        for name in ("share/doc/README", "share/doc/README.hardlink"):
            member = archive.getmember(f"{root}/{name}")
            assert member.isreg(), "a hard link must be stored as a regular file"
            extracted = archive.extractfile(member)
            assert extracted is not None and extracted.read() == b"read me\n"
        long_file = archive.getmember(f"{root}/share/{'n' * 120}/{'n' * 120}")
        extracted = archive.extractfile(long_file)
        assert extracted is not None and extracted.read() == b"long"
    assert by_name[f"{root}/share/{'l' * 150}"].linkname == "n" * 120
    assert by_name[f"{root}/share/naïve"].isreg()
    assert by_name[f"{root}/share/{LATIN_1_NAME}"].isreg()


@pytest.mark.parametrize("tar_blocks", ["one", "several"])
def test_store_layer_is_igzip_threaded_output_of_its_tar(
    tmp_path: Path, storage: FilesystemStorage, tar_blocks: str
) -> None:
    # A layer of less than one block is compressed on the calling thread, a larger one by
    # igzip_threaded: both must be exactly what igzip_threaded makes of the tar.
    package = store_path(tmp_path / "nix" / "store", f"{tar_blocks}-1.0")
    size = 200_000 if tar_blocks == "one" else 2_500_000
    write_file(package / "data", (b"some text " + os.urandom(6)) * (size // 16), 0o444)
    blob = write_store_layer([str(package)], storage)
    compressed = stored_bytes(storage, blob)
    tar_bytes = gzip.decompress(compressed)
    assert (len(tar_bytes) < 1 << 20) == (tar_blocks == "one")

    expected = io.BytesIO()
    with igzip_threaded.open(
        expected, "wb", compresslevel=2, threads=2, block_size=1 << 20
    ) as reference:
        for start in range(0, len(tar_bytes), 1 << 20):
            reference.write(tar_bytes[start : start + (1 << 20)])
    assert compressed == expected.getvalue()


def test_store_layer_gzip_header_is_fixed(hello: Path, storage: FilesystemStorage) -> None:
    compressed = stored_bytes(storage, write_store_layer([str(hello)], storage))
    magic, method, flags, mtime = compressed[:2], compressed[2], compressed[3], compressed[4:8]
    assert (magic, method, flags, mtime) == (b"\x1f\x8b", 8, 0, b"\0\0\0\0")


def test_store_layer_is_byte_identical_across_runs_orders_and_processes(
    tmp_path: Path, hello: Path, storage: FilesystemStorage
) -> None:
    other = store_path(tmp_path / "nix" / "store", "other-1.0")
    write_file(other / "lib" / "libother.so", os.urandom(300_000), 0o555)
    paths = [str(hello), str(other)]

    first = write_store_layer(paths, storage)
    first_bytes = stored_bytes(storage, first)
    second_storage = FilesystemStorage(tmp_path / "second")
    second = write_store_layer(list(reversed(paths)), second_storage)
    assert second == first
    assert stored_bytes(second_storage, second) == first_bytes

    for seed in ("1", "4242"):
        root = tmp_path / f"subprocess-{seed}"
        assert layer_in_subprocess("write_store_layer", paths, root, seed) == first.digest
        assert (root / "blobs" / "sha256" / first.digest[7:]).read_bytes() == first_bytes


@pytest.mark.e2e
def test_store_layer_of_a_real_nix_store_path(tmp_path: Path, storage: FilesystemStorage) -> None:
    require_tools("nix-store")
    source = tmp_path / "layer-test-package"
    write_file(source / "bin" / "tool", b"#!/bin/sh\necho tool\n", 0o755)
    write_file(source / "share" / "data", b"data\n", 0o644)
    added = subprocess.run(
        ["nix-store", "--add", str(source)],
        env=NIX_ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert added.startswith("/nix/store/")

    members, raw_tar = read_layer(storage, write_store_layer([added], storage))
    assert_deterministic_headers(members, raw_tar)
    by_name = member_map(members)
    name = added.lstrip("/")
    assert [member.name for member in members[:2]] == ["nix", "nix/store"]
    assert by_name["nix"].mode == by_name["nix/store"].mode == 0o755
    # The store makes everything read-only and keeps only the exec bit.
    assert by_name[name].mode == 0o555
    assert by_name[f"{name}/bin/tool"].mode == 0o555
    assert by_name[f"{name}/share/data"].mode == 0o444


def test_store_layer_memory_stays_bounded_for_a_large_layer(tmp_path: Path) -> None:
    package = store_path(tmp_path / "nix" / "store", "big-1.0")
    big_file = package / "big.bin"
    size = 200 * 1024 * 1024
    with big_file.open("wb") as out:
        block = os.urandom(1024 * 1024)
        for index in range(size // len(block)):
            # Distinct 1 MiB blocks: deflate cannot find repeats within its 32 KiB window.
            out.write(hashlib.sha256(index.to_bytes(8, "big")).digest() + block[32:])
    script = textwrap.dedent(
        """
        import gzip, hashlib, json, resource, sys, tracemalloc
        from pathlib import Path
        from nixery.build.layers import write_store_layer
        from nixery.storage.filesystem import FilesystemStorage
        package, root = sys.argv[1:]
        storage = FilesystemStorage(Path(root))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        tracemalloc.start()
        blob = write_store_layer([package], storage)
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        tar_hash = hashlib.sha256()
        with gzip.open(storage.open(blob.digest)) as tar:
            while chunk := tar.read(1 << 20):
                tar_hash.update(chunk)
        print(json.dumps({
            "traced_peak": traced_peak,
            "rss_growth": rss_after - rss_before,
            "size": blob.size,
            "diff_id_ok": blob.diff_id == "sha256:" + tar_hash.hexdigest(),
        }))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(package), str(tmp_path / "storage")],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout)
    assert report["diff_id_ok"]
    assert report["size"] > size  # really incompressible: the whole stream went through
    # A fixed number of 1 MiB blocks in flight (queued, compressing, written) per compression
    # thread: a bound that does not grow with the layer.
    assert report["traced_peak"] < 32 * 1024 * 1024, report
    assert report["rss_growth"] < 48 * 1024 * 1024, report


class ObservedStorage(FilesystemStorage):
    """Real filesystem storage that runs `on_first_write` once bytes start to arrive."""

    def __init__(self, root: Path, on_first_write: object) -> None:
        super().__init__(root)
        self.on_first_write = on_first_write
        self.events: list[str] = []

    def writer(self) -> ObservedWriter:  # type: ignore[override]
        return ObservedWriter(self, super().writer())


class ObservedWriter(AbortUnlessCommitted):
    def __init__(self, storage: ObservedStorage, inner: BlobWriter) -> None:
        self._storage = storage
        self._inner = inner

    def write(self, data: bytes) -> int:
        if "write" not in self._storage.events:
            self._storage.events.append("write")
            callback = self._storage.on_first_write
            assert callable(callback)
            callback()
        return self._inner.write(data)

    def commit(self, digest: str, media_type: str) -> None:
        self._storage.events.append("commit")
        self._inner.commit(digest, media_type)

    def abort(self) -> None:
        self._storage.events.append("abort")
        self._inner.abort()


def assert_nothing_stored(storage: FilesystemStorage) -> None:
    assert list(storage.blob_dir.iterdir()) == []
    assert list(storage.tmp_dir.iterdir()) == []


def test_path_vanishing_mid_stream_commits_nothing(tmp_path: Path) -> None:
    package = store_path(tmp_path / "nix" / "store", "vanishing-1.0")
    # Sorted first and larger than a compression chunk, so compressed bytes reach the writer
    # before the later file is read.
    write_file(package / "a-first.bin", os.urandom(3 * 1024 * 1024))
    victim = write_file(package / "z-victim", b"here at walk time")
    storage = ObservedStorage(tmp_path / "storage", on_first_write=victim.unlink)

    with pytest.raises(FileNotFoundError):
        write_store_layer([str(package)], storage)
    assert storage.events == ["write", "abort"]
    assert_nothing_stored(storage)


def test_unsupported_file_type_mid_stream_commits_nothing(tmp_path: Path) -> None:
    package = store_path(tmp_path / "nix" / "store", "fifo-1.0")
    write_file(package / "a-first.bin", os.urandom(3 * 1024 * 1024))
    os.mkfifo(package / "z-fifo")
    storage = ObservedStorage(tmp_path / "storage", on_first_write=lambda: None)

    with pytest.raises(ValueError, match="unsupported file type"):
        write_store_layer([str(package)], storage)
    assert storage.events == ["write", "abort"]
    assert_nothing_stored(storage)


def test_relative_path_is_rejected(storage: FilesystemStorage) -> None:
    with pytest.raises(ValueError, match="absolute"):
        write_store_layer(["nix/store/x"], storage)
    assert_nothing_stored(storage)


@pytest.fixture
def packages(tmp_path: Path) -> dict[str, Path]:
    store = tmp_path / "nix" / "store"
    git = store_path(store, "git-2.44.0")
    write_file(git / "bin" / "git", b"git", 0o555)
    write_file(git / "share" / "man" / "man1" / "git.1", b"man git")
    os.symlink("../share/doc", git / "bin" / "git-doc")
    (git / "share" / "git-core" / "templates" / "branches").mkdir(parents=True)
    # A package whose `lib` is a symlink must keep it, even when a later one has a `lib/` dir.
    os.symlink("share", git / "lib")

    htop = store_path(store, "htop-3.3.0")
    write_file(htop / "bin" / "htop", b"htop", 0o555)
    write_file(htop / "bin" / "git", b"htop's git", 0o555)
    write_file(htop / "share" / "man" / "man1" / "htop.1", b"man htop")
    write_file(htop / "lib" / "libhtop.so", b"so")

    coreutils = store_path(store, "coreutils-9.4")
    write_file(coreutils / "bin" / "coreutils", b"coreutils", 0o555)
    os.symlink("coreutils", coreutils / "bin" / "env")

    bash = store_path(store, "bash-5.2p26")
    write_file(bash / "bin" / "bash", b"bash", 0o555)

    busybox = store_path(store, "busybox-1.36.1")
    write_file(busybox / "bin" / "busybox", b"busybox", 0o555)
    os.symlink("busybox", busybox / "bin" / "sh")

    broken_bash = store_path(store, "broken-bash-1.0")
    (broken_bash / "bin").mkdir()
    os.symlink("missing", broken_bash / "bin" / "bash")

    nss_cacert = store_path(store, "nss-cacert-3.98")
    write_file(nss_cacert / "etc" / "ssl" / "certs" / "ca-bundle.crt", b"nss bundle")

    debian_style_cacert = store_path(store, "cacert-1.0")
    write_file(debian_style_cacert / "etc" / "ssl" / "certs" / "ca-certificates.crt", b"bundle")

    # A single-file store path, as `writeText` makes: nothing to merge into the root.
    single_file = store / f"{'f' * 32}-script.sh"
    write_file(single_file, b"echo", 0o555)

    return {
        "git": git,
        "htop": htop,
        "coreutils": coreutils,
        "bash": bash,
        "busybox": busybox,
        "broken-bash": broken_bash,
        "nss-cacert": nss_cacert,
        "cacert": debian_style_cacert,
        "single-file": single_file,
    }


def symlink_layer(
    storage: FilesystemStorage, packages: dict[str, Path], *names: str
) -> dict[str, tarfile.TarInfo]:
    blob = write_symlink_layer([str(packages[name]) for name in names], storage)
    members, raw_tar = read_layer(storage, blob)
    assert_deterministic_headers(members, raw_tar)
    assert all(member.isdir() or member.issym() for member in members)
    by_name = member_map(members)
    for member in members:
        if member.issym():
            assert os.path.isabs(member.linkname)
            assert os.path.lexists(member.linkname), f"{member.name} -> {member.linkname}"
    for added in ("bin/sh", "usr/bin/env", "etc/ssl/certs/ca-bundle.crt"):
        if added in by_name:
            assert os.path.exists(by_name[added].linkname), f"{added} dangles"
    for member in members:
        if member.isdir():
            assert member.mode == (0o1777 if member.name == "tmp" else 0o755)
    return by_name


def test_symlink_layer_merges_directories_and_first_package_wins(
    storage: FilesystemStorage, packages: dict[str, Path]
) -> None:
    root = symlink_layer(storage, packages, "git", "htop", "single-file")
    git, htop = packages["git"], packages["htop"]

    assert root["bin"].isdir() and root["share/man/man1"].isdir()
    assert root["bin/git"].linkname == f"{git}/bin/git"
    assert root["bin/htop"].linkname == f"{htop}/bin/htop"
    assert root["share/man/man1/git.1"].linkname == f"{git}/share/man/man1/git.1"
    assert root["share/man/man1/htop.1"].linkname == f"{htop}/share/man/man1/htop.1"
    # A package's own symlink is linked to, not copied or resolved.
    assert root["bin/git-doc"].linkname == f"{git}/bin/git-doc"
    assert root["share/git-core/templates/branches"].isdir()
    assert root["lib"].issym() and root["lib"].linkname == f"{git}/lib"
    assert not any(name.startswith("lib/") for name in root)
    assert root["tmp"].isdir() and root["tmp"].mode == 0o1777
    assert not any("script.sh" in member.linkname for member in root.values())

    swapped = symlink_layer(FilesystemStorage(storage.root / "swapped"), packages, "htop", "git")
    assert swapped["bin/git"].linkname == f"{htop}/bin/git"
    assert swapped["lib"].isdir()
    assert swapped["lib/libhtop.so"].linkname == f"{htop}/lib/libhtop.so"


def test_usr_bin_env_only_with_an_env_provider(
    storage: FilesystemStorage, packages: dict[str, Path]
) -> None:
    without = symlink_layer(storage, packages, "git", "bash")
    assert "usr/bin/env" not in without and "usr" not in without

    with_env = symlink_layer(
        FilesystemStorage(storage.root / "with-env"), packages, "git", "coreutils"
    )
    assert with_env["usr"].isdir() and with_env["usr/bin"].isdir()
    assert with_env["usr/bin/env"].linkname == f"{packages['coreutils']}/bin/env"
    assert with_env["bin/env"].linkname == f"{packages['coreutils']}/bin/env"


def test_bin_sh_comes_from_a_provider_or_bash_and_never_dangles(
    storage: FilesystemStorage, packages: dict[str, Path]
) -> None:
    from_bash = symlink_layer(storage, packages, "git", "bash")
    assert from_bash["bin/sh"].linkname == f"{packages['bash']}/bin/bash"

    provided = symlink_layer(FilesystemStorage(storage.root / "b"), packages, "bash", "busybox")
    assert provided["bin/sh"].linkname == f"{packages['busybox']}/bin/sh"

    without_shell = symlink_layer(FilesystemStorage(storage.root / "c"), packages, "git", "htop")
    assert "bin/sh" not in without_shell

    # bin/bash exists in the merged tree but points nowhere: no bin/sh to it.
    broken = symlink_layer(FilesystemStorage(storage.root / "d"), packages, "broken-bash")
    assert "bin/bash" in broken and "bin/sh" not in broken


def test_ca_bundle_is_merged_or_linked_from_cacert(
    storage: FilesystemStorage, packages: dict[str, Path]
) -> None:
    merged = symlink_layer(storage, packages, "git", "nss-cacert")
    bundle = f"{packages['nss-cacert']}/etc/ssl/certs/ca-bundle.crt"
    assert merged["etc/ssl/certs/ca-bundle.crt"].linkname == bundle

    other_layout = symlink_layer(FilesystemStorage(storage.root / "b"), packages, "git", "cacert")
    assert other_layout["etc/ssl/certs/ca-bundle.crt"].linkname == (
        f"{packages['cacert']}/etc/ssl/certs/ca-certificates.crt"
    )
    assert other_layout["etc/ssl/certs"].isdir()

    without = symlink_layer(FilesystemStorage(storage.root / "c"), packages, "git")
    assert "etc" not in without


def test_symlink_layer_is_byte_identical_across_runs_and_processes(
    tmp_path: Path, storage: FilesystemStorage, packages: dict[str, Path]
) -> None:
    paths = [str(path) for path in packages.values()]
    first = write_symlink_layer(paths, storage)
    again = write_symlink_layer(paths, FilesystemStorage(tmp_path / "again"))
    assert again == first
    for seed in ("7", "123456"):
        root = tmp_path / f"subprocess-{seed}"
        assert layer_in_subprocess("write_symlink_layer", paths, root, seed) == first.digest
        stored = (root / "blobs" / "sha256" / first.digest[7:]).read_bytes()
        assert stored == stored_bytes(storage, first)


def test_layers_are_committed_with_the_layer_media_type(tmp_path: Path, hello: Path) -> None:
    committed: list[tuple[str, str]] = []

    class RecordingWriter:
        def __init__(self, inner: BlobWriter) -> None:
            self.inner = inner

        def write(self, data: bytes) -> int:
            return self.inner.write(data)

        def commit(self, digest: str, media_type: str) -> None:
            committed.append((digest, media_type))
            self.inner.commit(digest, media_type)

        def abort(self) -> None:
            self.inner.abort()

        def __enter__(self) -> RecordingWriter:
            return self

        def __exit__(self, *exc_info: object) -> None:
            self.inner.abort()

    class RecordingStorage(FilesystemStorage):
        def writer(self) -> RecordingWriter:  # type: ignore[override]
            return RecordingWriter(super().writer())

    storage = RecordingStorage(tmp_path / "storage")
    store_blob = write_store_layer([str(hello)], storage)
    symlink_blob = write_symlink_layer([str(hello)], storage)
    assert committed == [
        (store_blob.digest, OCI_LAYER),
        (symlink_blob.digest, OCI_LAYER),
    ]
