"""The gzip framing: one gzip member exactly as igzip_threaded makes it of fixed blocks, whatever
the writes' sizes, with both sides hashed on the way."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import threading

import pytest
from isal import igzip_threaded

from nixery.build.gzipstream import BLOCK_SIZE, COMPRESSOR, GzipHashStream


class Collected:
    """A sink that keeps what it is given."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes, /) -> int:
        self.data += data
        return len(data)


def reference_gzip(data: bytes) -> bytes:
    """igzip_threaded fed exactly one block per write: the bytes the stream must produce."""
    out = io.BytesIO()
    with igzip_threaded.open(out, "wb", compresslevel=2, threads=2, block_size=BLOCK_SIZE) as gz:
        for start in range(0, len(data), BLOCK_SIZE):
            gz.write(data[start : start + BLOCK_SIZE])
    return out.getvalue()


def test_compressor_id_names_library_version_level_and_block_size() -> None:
    assert COMPRESSOR.startswith("isal-1.9.1/")
    assert COMPRESSOR.endswith("/gzip-2/blocks-1048576")


@pytest.mark.parametrize(
    "size", [1, 70_000, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, 3 * BLOCK_SIZE + 12345]
)
def test_output_is_igzip_threaded_of_fixed_blocks_whatever_the_writes(size: int) -> None:
    rng = random.Random(size)
    data = (b"layer text " + rng.randbytes(5)) * (size // 16) + rng.randbytes(size % 16)
    expected = reference_gzip(data)
    for splits in ("whole", "random"):
        sink = Collected()
        with GzipHashStream(sink) as stream:
            if splits == "whole":
                stream.write(data)
            else:
                start = 0
                while start < len(data):
                    end = start + rng.choice([1, 511, 512, 40_000, BLOCK_SIZE, BLOCK_SIZE + 7])
                    stream.write(data[start:end])
                    start = end
            digests = stream.finish()
        assert bytes(sink.data) == expected, splits
        assert gzip.decompress(sink.data) == data
        assert digests.uncompressed_sha256 == hashlib.sha256(data).hexdigest()
        assert digests.compressed_sha256 == hashlib.sha256(expected).hexdigest()
        assert digests.compressed_size == len(expected)


def test_empty_input_is_a_valid_gzip_of_nothing() -> None:
    # Never a layer (a tar stream holds at least its end-of-archive record), and the one input
    # where the single-block path's bytes differ from igzip_threaded's (which writes no block).
    sink = Collected()
    with GzipHashStream(sink) as stream:
        digests = stream.finish()
    assert gzip.decompress(sink.data) == b""
    assert digests.uncompressed_sha256 == hashlib.sha256(b"").hexdigest()
    assert digests.compressed_sha256 == hashlib.sha256(sink.data).hexdigest()
    assert digests.compressed_size == len(sink.data)


def test_leaving_unfinished_stops_the_compressor_threads() -> None:
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="stopped"), GzipHashStream(Collected()) as stream:
        stream.write(bytes(3 * BLOCK_SIZE))
        assert threading.active_count() > before
        raise RuntimeError("stopped")
    assert threading.active_count() == before
