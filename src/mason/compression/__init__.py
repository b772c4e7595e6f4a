"""Compression streams: gzip (isal or zlib), zstd, estargz, none."""

from mason.compression.errors import CompressionError, EStargzError
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
    "CompressionError",
    "EStargzError",
    "check_level",
    "compress_stream",
    "detect_compression",
    "open_compressor",
    "open_decompressed",
]
