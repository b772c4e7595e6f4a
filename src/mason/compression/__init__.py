"""Compression streams: gzip (isal or zlib), zstd, estargz, none."""
