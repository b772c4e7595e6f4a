"""Deterministic, block-parallel gzip.

The stream is cut into fixed 1 MiB blocks that are compressed on their own, so
they can go to several threads, and the output depends only on the input bytes,
the level and the engine: not on how the caller sliced its writes, nor on the
thread count. Headers are fixed (no name, mtime 0, OS 255, as Go writes them).

Engines (``GzipWriter(engine=...)``; ``default_gzip_engine()`` picks the first
importable one):

- "libdeflate" (default): each block is one gzip member (RFC 1952 allows a
  series of members; Go's, containerd's, pigz's, gzip's and Python's readers read
  them all, and eStargz is built the same way). Gzip level L is libdeflate level
  L. On layer tars libdeflate's output at level L is *smaller* than Go's
  ``compress/gzip`` (what BuildKit uses) and zlib's at the same level, at about
  twice Go's speed per core (bench/bench_compression.py; e.g. level 6: ratio
  0.604 vs Go 0.614 and zlib 0.613, ~100 MB/s per core vs Go ~50). A block that
  does not compress (random or already compressed bytes) is stored instead,
  about 1.5 ms/MiB instead of ~10.
- "isal" (ISA-L): one member, each block deflated with the previous block's last
  32 KiB as dictionary and ended with a sync flush (pigz's scheme). About five
  times faster than libdeflate but ISA-L has no lazy matching: at "level 6"
  (ISA-L level 2) output is ~5% larger than Go's level 6, ~4% at ISA-L's best
  (level 3). Choose it when speed matters more than size.
- "zlib": as "isal" with stdlib zlib (portable fallback; zlib's ratio, ~35 MB/s
  per core).

Level 0 (stored, no compression) is always one zlib member.
"""

from __future__ import annotations

import collections
import functools
import io
import os
import struct
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, BinaryIO

from mason.compression.errors import CompressionError
from mason.compression.kinds import get_compression
from mason.futures import Future, ThreadPoolExecutor

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_GZIP_LEVEL",
    "GZIP_ENGINES",
    "GzipWriter",
    "check_gzip_engine",
    "check_gzip_level",
    "default_gzip_engine",
    "gzip_backend",
    "gzip_header",
    "gzip_member",
    "open_gzip_reader",
]

try:  # ISA-L is several times faster than zlib; zlib is the portable fallback.
    from isal import igzip as _igzip
    from isal import isal_zlib as _isal_zlib

    _HAVE_ISAL = True
except ImportError:  # pragma: no cover - isal is a declared dependency
    _HAVE_ISAL = False

try:  # libdeflate: better ratio than zlib at the same level, faster (whole-buffer API only)
    import deflate as _libdeflate

    _HAVE_LIBDEFLATE = True
except ImportError:  # pragma: no cover - deflate is a declared dependency
    _HAVE_LIBDEFLATE = False

GZIP_ENGINES: tuple[str, ...] = ("libdeflate", "isal", "zlib")

BLOCK_SIZE = 1 << 20
DEFAULT_GZIP_LEVEL = (
    get_compression("gzip").default_level or 6
)  # Go's gzip.DefaultCompression, what BuildKit uses
_WINDOW = 1 << 15


def gzip_backend(prefer_isal: bool = True) -> str:
    """ "isal" or "zlib": the library behind streaming deflate and the readers."""
    return "isal" if (_HAVE_ISAL and prefer_isal) else "zlib"


def default_gzip_engine() -> str:
    """The engine ``GzipWriter`` uses by default: the first importable of ``GZIP_ENGINES``."""
    if _HAVE_LIBDEFLATE:
        return "libdeflate"
    return gzip_backend()


def check_gzip_engine(engine: str | None) -> str:
    """``engine`` if it is importable (None: ``default_gzip_engine()``), else ``CompressionError``."""
    if engine is None:
        return default_gzip_engine()
    available = {"libdeflate": _HAVE_LIBDEFLATE, "isal": _HAVE_ISAL, "zlib": True}
    if not available.get(engine, False):
        raise CompressionError(
            f"gzip engine {engine!r} is not available",
            hint=f"use one of {', '.join(e for e in GZIP_ENGINES if available[e])}",
        )
    return engine


def gzip_header(level: int) -> bytes:
    """The 10-byte member header Go's compress/gzip writes: FLG 0, MTIME 0, OS 255."""
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl, 0xFF])


def check_gzip_level(level: int | None) -> int:
    effective = get_compression("gzip").check_level(level)
    assert effective is not None
    return effective


def _deflater(level: int, prefer_isal: bool) -> tuple[ModuleType, int]:
    """The module and native level for a gzip level 0-9."""
    if level == 0 or not (_HAVE_ISAL and prefer_isal):
        return zlib, level  # level 0 means stored blocks, which only zlib writes
    # ISA-L has levels 0-3; spread gzip's 1-9 over 1-3 (its 0 is worse and no faster than 1).
    return _isal_zlib, 1 if level <= 3 else 2 if level <= 6 else 3


def _crc_fn(prefer_isal: bool) -> Callable[[bytes, int], int]:
    return _isal_zlib.crc32 if (_HAVE_ISAL and prefer_isal) else zlib.crc32


def _deflate_block(module: ModuleType, level: int, data: bytes, zdict: bytes, final: bool) -> bytes:
    if zdict:
        c = module.compressobj(level, module.DEFLATED, -15, 9, module.Z_DEFAULT_STRATEGY, zdict)
    else:
        c = module.compressobj(level, module.DEFLATED, -15, 9)
    out: bytes = c.compress(data)
    out += c.flush(module.Z_FINISH if final else module.Z_SYNC_FLUSH)
    return out


#: Probes of an incompressible-block check: this many slices of this size, spread over the block.
_PROBES, _PROBE_SIZE = 8, 4096
#: The piece size the check feeds ISA-L: a whole block's output at once, in every compressing
#: thread, cost a 1 GiB layer's COPY ~20 MiB more peak memory; 4 KiB pieces cost 2.6 ms per
#: random MiB in calls, 64 KiB pieces 1.4 ms.
_FEED = 1 << 16


def _shrinks(data: bytes | memoryview) -> bool:
    """Whether ISA-L's fastest level saves at least 1% of ``data``. Fed in ``_FEED`` pieces:
    only the output's size is kept."""
    c = _isal_zlib.compressobj(1, _isal_zlib.DEFLATED, -15, 9)
    view = memoryview(data)
    out_size = sum(len(c.compress(view[i : i + _FEED])) for i in range(0, len(view), _FEED))
    out_size += len(c.flush())
    return out_size * 100 < len(data) * 99


def _incompressible(data: bytes) -> bool:
    """Whether a block is not worth deflating: already compressed or random bytes.

    Deflating those costs libdeflate ~10 ms/MiB for no gain. Probes spread over the block
    look first (cheap, so compressible blocks pay ~1%); only when they all fail to shrink
    does ISA-L's fastest level try the whole block (~1.4 ms/MiB), so a block with a
    compressible stretch between the probes is still deflated.
    """
    if not _HAVE_ISAL or len(data) < _PROBES * _PROBE_SIZE * 4:
        return False
    view = memoryview(data)
    step = len(data) // _PROBES
    probes = b"".join(view[i * step : i * step + _PROBE_SIZE] for i in range(_PROBES))
    return not _shrinks(probes) and not _shrinks(view)


def _member(level: int, data: bytes, _zdict: bytes, _final: bool) -> bytes:
    """One complete gzip member of ``data`` by libdeflate (its CRC too: computed off the GIL).

    An incompressible block is written as stored deflate blocks (libdeflate's level 0),
    which is what deflating it would come to, within about 1%.
    """
    body = _libdeflate.deflate_compress(data, 0 if _incompressible(data) else level)
    trailer = struct.pack("<II", _libdeflate.crc32(data), len(data) & 0xFFFFFFFF)
    return b"".join((gzip_header(level), body, trailer))


def gzip_member(data: bytes, level: int | None = None, engine: str | None = None) -> bytes:
    """One complete gzip member holding ``data``, by ``engine`` (default: ``default_gzip_engine()``).

    The unit of eStargz (one member per file chunk and one for the TOC). Level 0 is
    stored blocks by zlib, as in ``GzipWriter``. Safe to call from several threads.
    """
    level = check_gzip_level(level)
    engine = check_gzip_engine(engine)
    if engine == "libdeflate" and level > 0:
        return _member(level, data, b"", True)
    module, native = _deflater(level, engine == "isal")
    body = _deflate_block(module, native, data, b"", True)
    crc = _crc_fn(engine == "isal")(data, 0)
    return b"".join(
        (gzip_header(level), body, struct.pack("<II", crc & 0xFFFFFFFF, len(data) & 0xFFFFFFFF))
    )


class GzipWriter(io.RawIOBase):
    """A writable gzip stream on ``dst``. ``close()`` ends the member; ``dst`` stays open.

    ``threads`` > 1 deflates blocks in a thread pool (libdeflate, ISA-L and zlib
    release the GIL), made for the first block that is not the last (a stream of one block is
    deflated on the caller's thread); the bytes written are the same for any thread count.
    ``engine`` is one of ``GZIP_ENGINES`` (default: ``default_gzip_engine()``).
    """

    def __init__(
        self,
        dst: BinaryIO,
        level: int | None = None,
        *,
        threads: int | None = None,
        engine: str | None = None,
        block_size: int = BLOCK_SIZE,
    ) -> None:
        super().__init__()
        self.level = check_gzip_level(level)
        self.engine = check_gzip_engine(engine)
        self._dst = dst
        # libdeflate has no streaming API: every block is a member of its own.
        self._members = self.engine == "libdeflate" and self.level > 0
        self._module, self._native_level = _deflater(self.level, self.engine == "isal")
        self._crc32 = _crc_fn(self.engine == "isal")
        self._block_size = block_size
        self._buf = bytearray()
        self._prev_tail = b""
        self._crc = 0
        self.uncompressed_size = 0
        self.compressed_size = 0
        if threads is None:
            threads = len(os.sched_getaffinity(0))
        self._threads = max(1, threads)
        self._pool: ThreadPoolExecutor | None = None  # made for the first block of several
        self._pending: collections.deque[Future[bytes]] = collections.deque()
        self._finished = False
        if not self._members:
            self._emit(gzip_header(self.level))

    def _emit(self, data: bytes) -> None:
        if data:
            self._dst.write(data)
            self.compressed_size += len(data)

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        if self._finished:
            raise ValueError("write to a closed gzip stream")
        view = memoryview(b).cast("B")
        n = len(view)
        self._buf += view
        while len(self._buf) >= self._block_size:
            block = bytes(self._buf[: self._block_size])
            del self._buf[: self._block_size]
            self._submit(block, final=False)
        return n

    def _submit(self, block: bytes, final: bool) -> None:
        self.uncompressed_size += len(block)
        if self._members:
            if not block and self.uncompressed_size:
                return  # the input ended on a block boundary: no empty trailing member
            task: Callable[[], bytes] = functools.partial(_member, self.level, block, b"", final)
        else:
            self._crc = self._crc32(block, self._crc)
            zdict = self._prev_tail
            self._prev_tail = (
                block[-_WINDOW:] if len(block) >= _WINDOW else (zdict + block)[-_WINDOW:]
            )
            task = functools.partial(
                _deflate_block, self._module, self._native_level, block, zdict, final
            )
        if self._threads == 1 or (final and not self._pending):
            # the last block with none in flight (all of a small layer): a thread would only
            # add its start and two GIL handoffs (~0.2 ms, 5 ms beside a busy thread)
            self._emit(task())
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, "gzip")
        self._pending.append(self._pool.submit(task))
        # Bound memory: at most two blocks in flight per thread.
        while len(self._pending) > 2 * self._threads:
            self._emit(self._pending.popleft().result())

    def close(self) -> None:
        if self._finished:
            super().close()
            return
        self._finished = True
        try:
            self._submit(bytes(self._buf), final=True)
            self._buf.clear()
            while self._pending:
                self._emit(self._pending.popleft().result())
            if not self._members:
                self._emit(
                    struct.pack("<II", self._crc & 0xFFFFFFFF, self.uncompressed_size & 0xFFFFFFFF)
                )
            self._dst.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            super().close()


#: the blocks a read-ahead reader decompresses at a time: small, so that its reader's first
#: bytes (a tar's first headers) come soon
_AHEAD_BLOCK = 128 * 1024


def open_gzip_reader(src: BinaryIO, *, prefer_isal: bool = True, ahead: bool = False) -> BinaryIO:
    """A reader of the decompressed bytes of every gzip member in ``src`` (``src`` left open).

    ``ahead``: ``src`` is read and decompressed in a thread of ISA-L's own (a block or two
    ahead), beside a reader that spends its time elsewhere (unpacking a layer: issue 14);
    read it with ``read1`` to get each block as it comes. Close it (the thread stops)."""
    if _HAVE_ISAL and prefer_isal and ahead:
        from isal import igzip_threaded

        return igzip_threaded.open(src, "rb", block_size=_AHEAD_BLOCK)  # type: ignore[no-untyped-call,no-any-return]
    if _HAVE_ISAL and prefer_isal:
        return _igzip.IGzipFile(fileobj=src, mode="rb")  # type: ignore[return-value,no-untyped-call]
    import gzip as _stdgzip

    return _stdgzip.GzipFile(fileobj=src, mode="rb")  # type: ignore[return-value]
