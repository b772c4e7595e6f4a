"""Compression streams: gzip, zstd, estargz, none (the vocabulary: ``kinds.Compression``).

gzip and eStargz share one engine choice (``mason.compression.gzip.GZIP_ENGINES``:
libdeflate by default, ISA-L or zlib); both are deterministic for any thread count. The
eStargz writer and reader are imported from ``mason.compression.estargz`` by the code that
needs them, so a build that asks for no eStargz never loads them.
"""

from mason.compression.errors import CompressionError, EStargzError
from mason.compression.kinds import COMPRESSION_NAMES, Compression, get_compression

# start-up (issue 14): the stream functions load with their module (gzip's thread pool and
# ISA-L), when first asked for; naming the vocabulary (``kinds``) loads no codec
TYPE_CHECKING = False
if TYPE_CHECKING:
    from mason.compression.streams import (
        COMPRESSIONS,
        check_level,
        compress_stream,
        detect_compression,
        open_compressor,
        open_decompressed,
    )

_STREAMS = frozenset(
    {
        "COMPRESSIONS",
        "check_level",
        "compress_stream",
        "detect_compression",
        "open_compressor",
        "open_decompressed",
    }
)


def __getattr__(name: str) -> object:
    if name in _STREAMS:
        from mason.compression import streams

        return getattr(streams, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COMPRESSIONS",
    "COMPRESSION_NAMES",
    "Compression",
    "CompressionError",
    "EStargzError",
    "check_level",
    "compress_stream",
    "detect_compression",
    "get_compression",
    "open_compressor",
    "open_decompressed",
]
