"""Compression streams: gzip, zstd, estargz, none (the vocabulary: ``kinds.Compression``).

gzip and eStargz share one engine choice (``mason.compression.gzip.GZIP_ENGINES``:
libdeflate by default, ISA-L or zlib); both are deterministic for any thread count. The
eStargz writer and reader are imported from ``mason.compression.estargz`` by the code that
needs them, so a build that asks for no eStargz never loads them; the streams likewise come
from ``mason.compression.streams`` (gzip's thread pool and ISA-L load with it), so naming a
compression (``kinds``) loads no codec (start-up, issue 14).
"""

from mason.compression.errors import CompressionError, EStargzError
from mason.compression.kinds import COMPRESSION_NAMES, Compression, get_compression

__all__ = [
    "COMPRESSION_NAMES",
    "Compression",
    "CompressionError",
    "EStargzError",
    "get_compression",
]
