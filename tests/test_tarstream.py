"""The tar encoder: headers byte-identical to what tarfile writes, made without it for ASCII names.

Whole tar streams are checked through the layers that carry them (tests/test_layers.py).
"""

from __future__ import annotations

import os
import tarfile

import pytest

from nixery.build.tarstream import tar_header, tar_info


@pytest.mark.parametrize(
    ("name", "kind", "mode", "size", "target"),
    [
        ("nix/store/abc-hello-1.0/bin/hello", tarfile.REGTYPE, 0o555, 12345, ""),
        ("nix/store/abc-hello-1.0/share", tarfile.DIRTYPE, 0o755, 0, ""),
        ("nix/store/abc-hello-1.0/share/", tarfile.DIRTYPE, 0o1777, 0, ""),
        (
            "nix/store/abc-hello-1.0/bin/sh",
            tarfile.SYMTYPE,
            0o777,
            0,
            "/nix/store/xyz-bash/bin/bash",
        ),
        ("n" * 100, tarfile.REGTYPE, 0o6755, 8**11 - 1, ""),
        ("d" * 100, tarfile.DIRTYPE, 0o755, 0, ""),  # 101 with its slash: PAX
        ("n" * 101, tarfile.REGTYPE, 0o444, 1, ""),
        ("l", tarfile.SYMTYPE, 0o777, 0, "t" * 101),
        ("big", tarfile.REGTYPE, 0o444, 8**11, ""),
        ("naïve", tarfile.REGTYPE, 0o444, 5, ""),
        ("link", tarfile.SYMTYPE, 0o777, 0, "naïve"),
        (os.fsdecode(b"latin-1-\xe9"), tarfile.REGTYPE, 0o444, 5, ""),
        ("", tarfile.REGTYPE, 0o444, 0, ""),
        ("p" * 93, tarfile.REGTYPE, 0o444, 1, ""),  # a record length that gains a digit
        ("q" * 989, tarfile.REGTYPE, 0o444, 1, "r" * 600),
    ],
)
def test_tar_header_is_what_tarfile_writes(
    name: str, kind: bytes, mode: int, size: int, target: str
) -> None:
    info = tar_info(name, kind, mode, size=size, target=target)
    assert tar_header(info) == info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@pytest.mark.parametrize("name_length", [40, 100, 101, 250])
def test_tar_header_of_an_ascii_member_does_not_go_through_tarfile(
    monkeypatch: pytest.MonkeyPatch, name_length: int
) -> None:
    name = "nix/store/abc-hello-1.0/" + "x" * (name_length - 24)
    members = [
        tar_info(name, tarfile.REGTYPE, 0o555, size=9),
        tar_info(name, tarfile.DIRTYPE, 0o755),
        tar_info(name, tarfile.SYMTYPE, 0o777, target="/" + name),
    ]
    expected = [info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") for info in members]

    def slow_path(*args: object) -> bytes:
        raise AssertionError("tarfile's general path was taken")

    monkeypatch.setattr(tarfile.TarInfo, "tobuf", slow_path)
    assert [tar_header(info) for info in members] == expected
