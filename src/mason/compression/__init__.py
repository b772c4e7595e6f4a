"""Compression streams: gzip, zstd, estargz, none (the vocabulary: ``kinds.Compression``).

gzip and eStargz share one engine choice (``mason.compression.gzip.GZIP_ENGINES``:
libdeflate by default, ISA-L or zlib); both are deterministic for any thread count.
"""

from mason.compression.errors import CompressionError, EStargzError
from mason.compression.estargz import (
    EStargzInfo,
    EStargzResult,
    estargz_to_tar,
    is_estargz,
    verify_estargz,
    write_estargz,
)
from mason.compression.kinds import COMPRESSION_NAMES, Compression, get_compression
from mason.compression.streams import (
    COMPRESSIONS,
    check_level,
    compress_stream,
    detect_compression,
    open_compressor,
    open_decompressed,
)

__all__ = [
    "COMPRESSIONS",
    "COMPRESSION_NAMES",
    "Compression",
    "CompressionError",
    "EStargzError",
    "EStargzInfo",
    "EStargzResult",
    "check_level",
    "compress_stream",
    "detect_compression",
    "estargz_to_tar",
    "get_compression",
    "is_estargz",
    "open_compressor",
    "open_decompressed",
    "verify_estargz",
    "write_estargz",
]
