"""Compression-agnostic streams: detect, compress, decompress.

Names: "uncompressed", "gzip", "zstd", "estargz" (eStargz is gzip on the
wire; it has its own writer in ``mason.compression.estargz`` because it
needs the tar structure). Everything streams in bounded chunks; no whole
layer is ever held in memory.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import zlib
from typing import Any, BinaryIO

from mason.compression.errors import CompressionError
from mason.compression.gzip import GzipWriter, open_gzip_reader
from mason.compression.kinds import COMPRESSION_NAMES, get_compression

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_ZSTD_LEVEL",
    "check_level",
    "compress_stream",
    "detect_compression",
    "open_compressor",
    "open_decompressed",
]

COMPRESSIONS: tuple[str, ...] = COMPRESSION_NAMES
DEFAULT_ZSTD_LEVEL = get_compression(
    "zstd"
).default_level  # libzstd's default; level 0 means "default" too
_CHUNK = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b\x08"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZIP2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"


def detect_compression(head: bytes) -> str:
    """Compression of a stream from its first bytes (6 are enough).

    Returns "gzip", "zstd", "bzip2", "xz" or "uncompressed". eStargz reads as
    "gzip" here: only its footer tells it apart (``estargz.is_estargz``).
    """
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC) or (
        len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"
    ):  # a zstd frame or a skippable frame (0x184D2A5?)
        return "zstd"
    if head.startswith(_XZ_MAGIC):
        return "xz"
    if head.startswith(_BZIP2_MAGIC) and len(head) >= 4 and head[3:4] in b"123456789":
        return "bzip2"
    return "uncompressed"


def check_level(compression: str, level: int | None) -> int | None:
    """Validate ``level`` for ``compression``; returns the effective level (None when unused)."""
    return get_compression(compression).check_level(level)


def _threads() -> int:
    return len(os.sched_getaffinity(0))


class _PassThroughWriter(io.RawIOBase):
    """Writes straight to ``dst``; close() flushes without closing ``dst``."""

    def __init__(self, dst: BinaryIO) -> None:
        super().__init__()
        self._dst = dst

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        return self._dst.write(b)

    def close(self) -> None:
        if not self.closed:
            self._dst.flush()
        super().close()


class _ZstdWriter(io.RawIOBase):
    """One zstd frame with a content checksum, compressed by libzstd's worker threads.

    Reproducible blobs: libzstd's multi-threaded mode cuts the input into jobs of a
    size set by the level alone (8 MiB at level 3) and its output does not depend on
    the worker count (>= 1) nor on how the input is sliced into writes; it differs
    from the single-threaded mode (workers = 0), so mason always uses >= 1 worker,
    even on one CPU. The content size is never written (it is not known up front
    when streaming, and a frame that sometimes has it would give the same layer two
    digests). Nothing flushes mid-frame (a flush would end a job early and change
    the bytes). Same input, level and libzstd version (pinned with ``zstandard``):
    same blob on any machine. Measured (bench_compression.py, 2 CPUs): as fast as
    ``zstd -3 -T0`` with ~5% less CPU; ``write_size`` / feed sizes change nothing.
    """

    def __init__(self, dst: BinaryIO, level: int, threads: int | None = None) -> None:
        super().__init__()
        self._dst = dst
        workers = max(1, _threads() if threads is None else threads)
        zstandard = _zstd()
        self._error = zstandard.ZstdError
        cctx = zstandard.ZstdCompressor(
            level=level, threads=workers, write_checksum=True, write_content_size=False
        )
        self._writer = cctx.stream_writer(dst, closefd=False)

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        try:
            return int(self._writer.write(b))
        except self._error as exc:
            raise CompressionError(f"zstd compression failed: {exc}") from exc

    def close(self) -> None:
        if not self.closed:
            try:
                # close() ends the frame; an extra flush would add an empty second frame
                self._writer.close()
            except self._error as exc:
                raise CompressionError(f"zstd compression failed: {exc}") from exc
            finally:
                super().close()
            self._dst.flush()


def open_compressor(
    dst: BinaryIO, compression: str, level: int | None = None, *, threads: int | None = None
) -> BinaryIO:
    """A writable stream compressing into ``dst``; ``close()`` finishes the stream and
    flushes ``dst`` but leaves it open. ``threads`` (default: the usable CPUs) never
    changes the bytes written, only the speed."""
    effective = check_level(compression, level)
    if compression == "gzip":
        return GzipWriter(dst, effective, threads=threads)  # type: ignore[return-value]
    if compression == "zstd":
        assert effective is not None
        return _ZstdWriter(dst, effective, threads)  # type: ignore[return-value]
    if compression == "uncompressed":
        return _PassThroughWriter(dst)  # type: ignore[return-value]
    raise CompressionError(
        "estargz needs the tar structure and cannot be written through open_compressor",
        hint="use mason.compression.estargz.write_estargz (or compress_stream)",
    )


_DECODE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, EOFError, OSError, lzma.LZMAError)


def _zstd() -> Any:
    """``zstandard`` (with libzstd and the ``platform`` module it imports) loads only when a
    zstd stream is written or read (start-up, issue 14)."""
    import zstandard

    return zstandard


class _TranslatingReader(io.RawIOBase):
    """Turns third-party decoder errors into ``CompressionError`` naming the stream."""

    def __init__(self, inner: Any, compression: str, what: str, *, in_blocks: bool = False) -> None:
        super().__init__()
        self._inner = inner
        # a read-ahead reader gives what it has decompressed (read1), not all that was asked
        self._read = inner.read1 if in_blocks else inner.read
        self._compression = compression
        self._what = what
        zstd_error = (_zstd().ZstdError,) if compression == "zstd" else ()
        self._errors: tuple[type[BaseException], ...] = _DECODE_ERRORS + zstd_error

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            data = self._read(len(b))
        except self._errors as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # a real I/O error of the source, not corrupt data
            raise CompressionError(
                f"{self._what}: corrupt {self._compression} data: {exc}"
            ) from exc
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


def open_decompressed(
    src: BinaryIO, compression: str, *, what: str = "stream", ahead: bool = False
) -> BinaryIO:
    """A reader of the decompressed bytes of ``src``. ``compression`` may be "auto"
    (detected from the first bytes; ``src`` must then support ``peek`` or ``seek``).
    Closing the reader does not close ``src``. ``ahead``: gzip is decompressed in a thread
    while the caller works on what came before (``open_gzip_reader``)."""
    if compression == "auto":
        compression, src = _sniff(src)
    inner: Any
    in_blocks = False
    if compression in ("gzip", "estargz"):
        inner = open_gzip_reader(src, ahead=ahead)
        compression, in_blocks = "gzip", ahead
    elif compression == "zstd":
        inner = (
            _zstd().ZstdDecompressor().stream_reader(src, read_across_frames=True, closefd=False)
        )
    elif compression == "uncompressed":
        inner = _NonClosing(src)
    elif compression == "bzip2":
        inner = bz2.BZ2File(src, "rb")
    elif compression == "xz":
        inner = lzma.LZMAFile(src, "rb")  # noqa: SIM115 - closed by the wrapper
    else:
        raise CompressionError(
            f"unknown compression {compression!r}", hint=f"use one of {', '.join(COMPRESSIONS)}"
        )
    return io.BufferedReader(
        _TranslatingReader(inner, compression, what, in_blocks=in_blocks), _CHUNK
    )


class _NonClosing:
    def __init__(self, src: BinaryIO) -> None:
        self._src = src

    def read(self, n: int = -1) -> bytes:
        return self._src.read(n)

    def close(self) -> None:
        pass


def _sniff(src: BinaryIO) -> tuple[str, BinaryIO]:
    peek = getattr(src, "peek", None)
    if peek is not None:
        return detect_compression(peek(8)[:8]), src
    if src.seekable():
        pos = src.tell()
        head = src.read(8)
        src.seek(pos)
        return detect_compression(head), src
    buffered: Any = io.BufferedReader(src)  # type: ignore[type-var,unused-ignore]
    return detect_compression(buffered.peek(8)[:8]), buffered


def compress_stream(
    src: BinaryIO, dst: BinaryIO, compression: str, level: int | None = None
) -> None:
    """Compress all of ``src`` into ``dst`` (neither is closed)."""
    if get_compression(compression).indexed:
        get_compression(compression).compress(src, dst, level)
        return
    writer = open_compressor(dst, compression, level)
    try:
        while chunk := src.read(_CHUNK):
            writer.write(chunk)
    finally:
        writer.close()
