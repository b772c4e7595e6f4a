"""The compressions mason writes, as one vocabulary: name, media-type suffix, level range,
writer and reader. ``-o``/``--cache-to`` parsing, the blob store and the cache model all ask
this table, so a new compression is one entry here (and its stream code).

Loading this module is cheap: the codecs are imported when a stream is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

from mason.compression.errors import CompressionError
from mason.structs import Struct

if TYPE_CHECKING:
    from mason.compression.estargz import EStargzResult

__all__ = ["COMPRESSION_NAMES", "Compression", "get_compression"]


class Compression(Struct, frozen=True):
    """One compression of layer blobs.

    ``wire`` is the stream format a reader sees (eStargz is gzip on the wire, so an eStargz
    blob serves wherever gzip is asked for); ``indexed`` means the blob carries a TOC inside
    its stream (eStargz), so it is written from the whole tar and its diff ID is that of its
    own stream, not the tar's."""

    name: str
    media_suffix: str
    level_range: tuple[int, int] | None
    default_level: int | None
    wire: str
    indexed: bool = False
    #: level 0 selects the default level (zstd's rule) instead of "no compression" (gzip's)
    zero_is_default: bool = False

    def check_level(self, level: int | None) -> int | None:
        """The effective level for ``level`` (None: the default); None when levels do not apply."""
        if self.level_range is None:
            return None
        if level is None or (level == 0 and self.zero_is_default):
            return self.default_level
        low, high = self.level_range
        if isinstance(level, bool) or not isinstance(level, int) or not low <= level <= high:
            extra = " (0: default)" if self.zero_is_default else ""
            raise CompressionError(
                f"invalid {self.name} compression level {level!r}",
                hint=f"{self.name} levels are {low}-{high}{extra}",
            )
        return level

    def writer(
        self, dst: BinaryIO, level: int | None = None, *, threads: int | None = None
    ) -> BinaryIO:
        """A writable stream compressing into ``dst`` (see ``streams.open_compressor``)."""
        from mason.compression.streams import open_compressor

        return open_compressor(dst, self.name, level, threads=threads)

    def compress(
        self, src: BinaryIO, dst: BinaryIO, level: int | None = None
    ) -> EStargzResult | None:
        """All of ``src`` (a layer tar) compressed into ``dst``; an indexed compression returns
        what identifies the blob it wrote (its diff ID, TOC digest, uncompressed size)."""
        if self.indexed:
            from mason.compression.estargz import write_estargz

            return write_estargz(src, dst, level)
        from mason.compression.streams import compress_stream

        compress_stream(src, dst, self.name, level)
        return None

    def reader(self, src: BinaryIO, *, what: str = "stream", ahead: bool = False) -> BinaryIO:
        """A reader of the decompressed bytes of ``src`` (which it does not close);
        ``ahead``: decompressed in a thread beside the caller (``open_decompressed``)."""
        from mason.compression.streams import open_decompressed

        return open_decompressed(src, self.wire, what=what, ahead=ahead)


_GZIP_LEVELS = (0, 9)
_TABLE: dict[str, Compression] = {
    c.name: c
    for c in (
        Compression("uncompressed", "", None, None, "uncompressed"),
        Compression(
            "gzip", "+gzip", _GZIP_LEVELS, 6, "gzip"
        ),  # 6: Go's gzip.DefaultCompression, BuildKit's
        Compression("zstd", "+zstd", (0, 22), 3, "zstd", zero_is_default=True),
        Compression("estargz", "+gzip", _GZIP_LEVELS, 6, "gzip", indexed=True),
    )
}
#: the names, in the order help texts list them
COMPRESSION_NAMES: tuple[str, ...] = tuple(_TABLE)


def get_compression(name: str) -> Compression:
    """The compression called ``name``; ``CompressionError`` naming the choices otherwise."""
    try:
        return _TABLE[name]
    except KeyError:
        raise CompressionError(
            f"unknown compression {name!r}", hint=f"use one of {', '.join(COMPRESSION_NAMES)}"
        ) from None
