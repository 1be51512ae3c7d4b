"""Gzip framing of a layer: bytes in, one deterministic gzip member out, both sides hashed.

The bytes written are cut into blocks of `BLOCK_SIZE`, each compressed by isa-l on its own thread
with the previous block's last 32 KiB as dictionary, as pigz does: one standard gzip member whose
bytes depend only on the input bytes, the level and the block size, never on how the writer split
its writes or how many threads compressed it. `COMPRESSOR` names those settings; it is part of
every layer-cache key.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import isal
from isal import igzip_threaded, isal_zlib

# isa-l's levels are 0-3. Level 2 over level 1: as fast within the noise, and smaller (1.135x vs
# 1.149x gzip -6 on the benchmark's real files, BENCHMARKS.md), which leaves a margin under the
# 1.15x target.
COMPRESSION_LEVEL = 2
BLOCK_SIZE = 1 << 20
# Compression threads per layer, beside the thread that reads, tars and hashes; layers are also
# written concurrently (ImageBuilder's pool; more than 2 layer workers measured slower on 2 cores).
# The bytes do not depend on this.
COMPRESSION_THREADS = 2
# The compressor decides a layer's bytes and so its digest: any change here must change this id,
# which is part of the layer-cache key.
COMPRESSOR = (
    f"isal-{isal.__version__}/isa-l-{isal.ISAL_VERSION}/"
    f"gzip-{COMPRESSION_LEVEL}/blocks-{BLOCK_SIZE}"
)

_RAW_DEFLATE = -15
# igzip_threaded's gzip header: no flags, zero mtime, then XFL 255 and OS 0 (isal 1.9.1 packs its
# OS byte before its XFL byte; decoders ignore both).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\xff\x00"
# A final, empty fixed-Huffman block: what closes igzip_threaded's stream of sync-flushed blocks.
_FINAL_EMPTY_DEFLATE_BLOCK = isal_zlib.compress(b"", wbits=_RAW_DEFLATE)


class Sink(Protocol):
    """Where the compressed bytes go (a storage `BlobWriter`)."""

    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class GzipDigests:
    """What one pass measured: sha256 of the bytes in, and of the gzip member out, and its size."""

    uncompressed_sha256: str  # hex
    compressed_sha256: str  # hex
    compressed_size: int


class _HashedSink:
    """Where the compressor's worker thread delivers gzip bytes: hashed, counted, passed on."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, compressed: bytes) -> int:
        self.sha256.update(compressed)
        self.size += len(compressed)
        return self._sink.write(compressed)

    def flush(self) -> None:
        pass


class GzipHashStream:
    """Bytes in; their sha256, their gzip member, its sha256 and size on the way to `sink`.

    Use as a context manager: leaving it stops the compressor's threads, finished or not.
    """

    def __init__(self, sink: Sink) -> None:
        self._uncompressed_sha256 = hashlib.sha256()
        self._pending = bytearray()
        self._sink = _HashedSink(sink)
        # Started at the first whole block: most store-path layers are smaller than one, and for
        # them starting threads would cost more than compressing.
        self._gzip: BinaryIO | None = None

    def __enter__(self) -> GzipHashStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, data: bytes) -> None:
        self._uncompressed_sha256.update(data)
        self._pending += data
        # Bytes go to the compressor in blocks of exactly BLOCK_SIZE, so the compressed stream
        # depends only on the bytes, never on how the caller happened to split its writes.
        whole = len(self._pending) - len(self._pending) % BLOCK_SIZE
        if whole:
            if self._gzip is None:
                # The gzip writer buffers exactly one block; every write here is exactly one
                # block (the last one excepted), so the blocks it compresses are the same
                # whatever its buffering.
                self._gzip = igzip_threaded.open(
                    self._sink,
                    "wb",
                    compresslevel=COMPRESSION_LEVEL,
                    threads=COMPRESSION_THREADS,
                    block_size=BLOCK_SIZE,
                )
            with memoryview(self._pending) as view:
                for start in range(0, whole, BLOCK_SIZE):
                    self._gzip.write(view[start : start + BLOCK_SIZE])
            del self._pending[:whole]

    def finish(self) -> GzipDigests:
        """Compress what is left and close the gzip member."""
        if self._gzip is None:
            self._compress_single_block(bytes(self._pending))
        else:
            self._gzip.write(self._pending)
            self._gzip.close()
        self._pending.clear()
        return GzipDigests(
            uncompressed_sha256=self._uncompressed_sha256.hexdigest(),
            compressed_sha256=self._sink.sha256.hexdigest(),
            compressed_size=self._sink.size,
        )

    def _compress_single_block(self, block: bytes) -> None:
        """What igzip_threaded writes for a stream of one block, made on this thread."""
        compressor = isal_zlib.compressobj(COMPRESSION_LEVEL, isal_zlib.DEFLATED, _RAW_DEFLATE)
        self._sink.write(_GZIP_HEADER)
        self._sink.write(compressor.compress(block) + compressor.flush(isal_zlib.Z_SYNC_FLUSH))
        self._sink.write(_FINAL_EMPTY_DEFLATE_BLOCK)
        self._sink.write(struct.pack("<II", isal_zlib.crc32(block), len(block) & 0xFFFFFFFF))

    def close(self) -> None:
        """Stop the compressor's threads (after `finish`, a no-op)."""
        if self._gzip is not None:
            self._gzip.close()
