"""Binary-cache metadata: `.narinfo` files, Nix's hash notation and ed25519 signatures.

A narinfo is `Key: value` lines: StorePath, URL (of the NAR, relative to the cache), Compression,
FileHash/FileSize (of the compressed file), NarHash/NarSize (of the NAR), References (base names),
Deriver, Sig (`<key name>:<base64 ed25519 signature>`, any number). The signature covers the
fingerprint `1;<store path>;<nar hash as sha256:nix32>;<nar size>;<full reference paths, comma
separated>`: a narinfo is trusted only when one of its signatures verifies against a trusted key
(`<key name>:<base64 public key>`, as Nix's `trusted-public-keys` lists them).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nixery.build.graph import STORE_DIR

# Nix's base-32 alphabet (no e, o, t, u), most significant digit first in the text.
_NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"
_NIX32_INDEX = {char: value for value, char in enumerate(_NIX32)}
_SHA256_SIZE = 32
_STORE_BASENAME = re.compile(r"[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+")
# What nixery.build.substituter decompresses; a NAR compressed otherwise (br, lzip, lz4) is
# realised by Nix instead.
COMPRESSIONS = ("xz", "zstd", "bzip2", "gzip", "none")


class NarInfoError(ValueError):
    """A narinfo that is malformed, or not signed by a trusted key."""


def nix32_encode(digest: bytes) -> str:
    length = (len(digest) * 8 - 1) // 5 + 1
    chars = []
    for n in range(length - 1, -1, -1):
        bit = n * 5
        byte, shift = divmod(bit, 8)
        value = digest[byte] >> shift
        if byte + 1 < len(digest):
            value |= digest[byte + 1] << (8 - shift)
        chars.append(_NIX32[value & 0x1F])
    return "".join(chars)


def nix32_decode(text: str, size: int) -> bytes:
    if len(text) != (size * 8 - 1) // 5 + 1:
        raise ValueError(f"a nix32 hash of {size} bytes cannot be {len(text)} characters")
    digest = bytearray(size)
    for n, char in enumerate(reversed(text)):
        value = _NIX32_INDEX.get(char)
        if value is None:
            raise ValueError(f"{char!r} is not a nix32 digit")
        byte, shift = divmod(n * 5, 8)
        digest[byte] |= (value << shift) & 0xFF
        carry = value >> (8 - shift)
        if byte + 1 < size:
            digest[byte + 1] |= carry
        elif carry:
            raise ValueError("nix32 hash out of range")
    return bytes(digest)


def parse_sha256(text: str) -> bytes:
    """A sha256 as Nix writes it: `sha256:<nix32|hex|base64>` or SRI `sha256-<base64>`."""
    algorithm, separator, value = text.partition(":")
    if not separator:
        algorithm, separator, value = text.partition("-")
    if algorithm != "sha256" or not separator:
        raise ValueError(f"not a sha256 hash: {text!r}")
    try:
        if len(value) == 52:
            return nix32_decode(value, _SHA256_SIZE)
        if len(value) == 64:
            return bytes.fromhex(value)
        decoded = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error) as error:
        raise ValueError(f"bad sha256 hash {text!r}: {error}") from None
    if len(decoded) != _SHA256_SIZE:
        raise ValueError(f"bad sha256 hash {text!r}")
    return decoded


@dataclass(frozen=True)
class NarInfo:
    store_path: str
    url: str
    compression: str
    file_size: int | None
    file_sha256: bytes | None
    nar_size: int
    nar_sha256: bytes
    references: tuple[str, ...]  # full store paths, sorted, possibly including store_path itself
    signatures: tuple[str, ...]

    def fingerprint(self) -> bytes:
        nar_hash = "sha256:" + nix32_encode(self.nar_sha256)
        return (
            f"1;{self.store_path};{nar_hash};{self.nar_size};{','.join(self.references)}".encode()
        )


def parse_narinfo(text: str, expected_store_path: str) -> NarInfo:
    fields: dict[str, str] = {}
    signatures: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, separator, value = line.partition(": ")
        if not separator:
            raise NarInfoError(f"narinfo line without a field: {line[:80]!r}")
        if key == "Sig":
            signatures.append(value)
        else:
            fields[key] = value
    try:
        store_path = fields["StorePath"]
        if store_path != expected_store_path:
            raise NarInfoError(f"narinfo is for {store_path}, not {expected_store_path}")
        compression = fields.get("Compression", "bzip2")  # Nix's default when the field is absent
        if compression not in COMPRESSIONS:
            raise NarInfoError(f"{store_path}: unsupported compression {compression!r}")
        url = fields["URL"]
        if url.startswith("/") or ".." in url.split("/") or "://" in url:
            raise NarInfoError(f"{store_path}: NAR URL outside the cache: {url!r}")
        references = tuple(
            sorted(f"{STORE_DIR}/{name}" for name in fields.get("References", "").split())
        )
        for reference in references:
            if not _STORE_BASENAME.fullmatch(reference[len(STORE_DIR) + 1 :]):
                raise NarInfoError(f"{store_path}: bad reference {reference!r}")
        return NarInfo(
            store_path=store_path,
            url=url,
            compression=compression,
            file_size=int(fields["FileSize"]) if "FileSize" in fields else None,
            file_sha256=parse_sha256(fields["FileHash"]) if "FileHash" in fields else None,
            nar_size=int(fields["NarSize"]),
            nar_sha256=parse_sha256(fields["NarHash"]),
            references=references,
            signatures=tuple(signatures),
        )
    except KeyError as missing:
        raise NarInfoError(f"narinfo of {expected_store_path} lacks {missing.args[0]}") from None
    except ValueError as error:
        if isinstance(error, NarInfoError):
            raise
        raise NarInfoError(f"narinfo of {expected_store_path}: {error}") from None


def parse_trusted_keys(keys: Iterable[str]) -> dict[str, Ed25519PublicKey]:
    """`name:base64` public keys, as Nix's trusted-public-keys lists them."""
    trusted: dict[str, Ed25519PublicKey] = {}
    for key in keys:
        name, separator, encoded = key.strip().partition(":")
        try:
            raw = base64.b64decode(encoded, validate=True)
            if not name or not separator:
                raise ValueError("expected name:base64")
            trusted[name] = Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, binascii.Error) as error:
            raise ValueError(f"bad public key {key!r}: {error}") from None
    return trusted


def verify_narinfo(info: NarInfo, trusted: Mapping[str, Ed25519PublicKey]) -> None:
    """Raises NarInfoError unless a signature by a trusted key covers the narinfo's fingerprint."""
    fingerprint = info.fingerprint()
    for signature in info.signatures:
        name, _, encoded = signature.partition(":")
        key = trusted.get(name)
        if key is None:
            continue
        try:
            key.verify(base64.b64decode(encoded, validate=True), fingerprint)
            return
        except (InvalidSignature, ValueError, binascii.Error):
            continue
    raise NarInfoError(f"{info.store_path}: no valid signature by a trusted key")
